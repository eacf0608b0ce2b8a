"""Trellis from Python: ingest a text and a few facts, ask, stream, and retrieve with LangChain.

    python examples/python_api.py [DATA_DIR]

Without DATA_DIR the data goes to a temporary directory, removed at the end. The default models load
offline from their PyPI packages (the first run converts the language model, once per model cache).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing it
    sys.path.insert(0, str(ROOT))

from app.library import Trellis  # noqa: E402

TEXT = """\
The Kerrow Lighthouse was built in 1852 by the engineer Thomas Abernethy. Its lamp could be seen from forty
kilometres away. The Vellin River flows north through the town of Carrow and empties into the Grey Sea.
"""
FACTS = """\
Blue Harbor\tdirected_by\tAnna Kowalski
Night Train\tdirected_by\tAnna Kowalski
Night Train\trelease_year\t2004
"""


def main(data_dir: Path) -> None:
    files = data_dir / "inputs"
    files.mkdir(parents=True, exist_ok=True)
    (files / "coast.txt").write_text(TEXT, encoding="utf-8")
    (files / "films.tsv").write_text(FACTS, encoding="utf-8")

    with Trellis.open(data_dir) as trellis:
        report = trellis.ingest([files / "coast.txt"])
        print(f"ingested {report.ingested} ({report.chunks} chunks, {report.relations} facts)")
        facts = trellis.ingest_triples(files / "films.tsv")
        print(f"loaded {facts.rows} triples")

        result = trellis.ask("Who built the Kerrow Lighthouse?")
        cited = result["citations"][0] if result["citations"] else {}
        print(f"answer: {result['answer']} [{result['source']}] cites {cited.get('title') or cited.get('doc_id')}")

        # a graph answer, streamed: its tokens as they are decoded, then the whole result
        for event in trellis.stream("who directed [Night Train]"):
            if "token" in event:
                print(f"token: {event['token']!r}")
            elif "result" in event:
                print(f"answer: {event['result']['answer']} by the path {event['result']['paths'][0]}")

        # a follow-up in a thread: "it" is read against the earlier turn
        trellis.ask("who directed [Night Train]", thread_id="films")
        print("follow-up:", trellis.ask("when was it released", thread_id="films")["answer"])

        # the same hybrid retrieval as a LangChain retriever: Documents with chunk id, doc id, title, page, score
        for document in trellis.retriever(k=2).invoke("lighthouse engineer"):
            meta = document.metadata
            print(f"retrieved {meta['chunk_id']} (score {meta['score']:.2f}): {document.page_content[:60]}...")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory(prefix="trellis-example-") as temporary:
            main(Path(temporary) / "data")
