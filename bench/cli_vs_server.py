"""Benchmark: `trellis ask` against `POST /ask` of a `trellis serve` child, same questions, same machine, one run.

A small data directory is built first (the MetaQA triples around one topic entity, with the MetaQA relation
schema, and the first 20 MuSiQue passages: the data `make demo` loads, cut down), then in interleaved rounds
each question is asked through the CLI (a fresh `trellis ask --json --timing` process: the answer time is
measured inside it with its models already loaded, as the warm server's are; the model load is reported
apart) and over HTTP (the client's wall time of the POST, which also counts the HTTP round trip). The order
of the two alternates between rounds. The ratio per question is median(CLI) / median(HTTP); the target is
at most 1.2.

Phases: `idle` (nothing else started by this script), then `loaded` with one busy process (a Python spin
loop) beside both, since the slowdown was first seen on a busy machine. In each phase the CLI is also run
as it ran before the fix ("cli_before_fix": OpenMP's spinning wait policy on every core whatever else runs,
as `TRELLIS_CPU_THREADS` set to the core count gives today), to show the cause. Writes bench/results/cli_vs_server.json.

    python bench/cli_vs_server.py [--rounds 5] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.load import Server  # noqa: E402
from bench.results_io import machine, now, write_result  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
TRELLIS = Path(sys.executable).with_name("trellis")
TOPIC = "Anthony Mann"
QUESTIONS = {
    "graph": f"who directed the movies written by [{TOPIC}]",
    "document": "Who publishes the Journal of Mathematical Physics?",
}
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
ENV.pop("OMP_WAIT_POLICY", None)  # what each entry point chooses is what is measured
ENV.pop("TRELLIS_CPU_THREADS", None)
# The CLI as it ran before the fix: spinning threads on every core, not fitted to the idle ones (lm.device).
BEFORE_FIX_ENV = {**ENV, "TRELLIS_CPU_THREADS": str(os.cpu_count() or 1)}


def build_data(work: Path) -> Path:
    """The topic entity's triples and those of its neighbours, and 20 passages, in `work/data` (once)."""
    data = work / "data"
    if (data / "graph.lbug").exists() and (data / "manifest.sqlite").exists():
        return data
    work.mkdir(parents=True, exist_ok=True)
    rows = [line.split("\t") for line in (SHARED / "metaqa" / "kb.tsv").read_text(encoding="utf-8").splitlines()]
    near = {TOPIC} | {name for head, _, tail in rows if TOPIC in (head, tail) for name in (head, tail)}
    kept = ["\t".join(row) for row in rows if row[0] in near or row[2] in near]
    (work / "kb.tsv").write_text("\n".join(kept) + "\n", encoding="utf-8")
    passages = json.loads((SHARED / "musique" / "corpus.json").read_text(encoding="utf-8"))[:20]
    (work / "passages.json").write_text(json.dumps(passages), encoding="utf-8")
    schema = ROOT / "examples" / "metaqa" / "relations.json"
    run = [str(TRELLIS), "ingest-triples", str(work / "kb.tsv"), "--schema", str(schema), "--data-dir", str(data)]
    subprocess.run(run, env=ENV, check=True, capture_output=True)
    run = [str(TRELLIS), "ingest", str(work / "passages.json"), "--data-dir", str(data)]
    subprocess.run(run, env=ENV, check=True, capture_output=True)
    return data


@contextmanager
def server(data: Path, log: Path) -> Iterator[str]:
    """A warm `trellis serve` child (`bench.load.Server`, its models loaded); stopped on the way out."""
    child = Server(data, log=log, env=ENV)
    try:
        child.wait_ready(models=True)
        yield child.url
    finally:
        child.stop()


@contextmanager
def busy(count: int) -> Iterator[None]:
    """`count` processes that spin on a core each until the block ends."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def ask_http(url: str, question: str) -> dict[str, Any]:
    started = time.perf_counter()
    response = httpx.post(f"{url}/ask", json={"question": question}, timeout=600)
    seconds = time.perf_counter() - started
    response.raise_for_status()
    result = response.json()
    return {"seconds": round(seconds, 3), "inside_s": result["trace"]["total_s"], "answer": result["answer"]}


def ask_cli(data: Path, question: str, before_fix: bool = False) -> dict[str, Any]:
    command = [str(TRELLIS), "ask", question, "--json", "--timing", "--data-dir", str(data)]
    started = time.perf_counter()
    environment = BEFORE_FIX_ENV if before_fix else ENV
    run = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - started
    if run.returncode != 0:
        raise RuntimeError(f"trellis ask failed: {run.stderr[-2000:]}")
    result = json.loads(run.stdout)
    loaded = re.search(r"models loaded in ([\d.]+) s", run.stderr)
    return {
        "seconds": result["trace"]["total_s"],  # answering, models loaded
        "model_load_s": float(loaded.group(1)) if loaded else None,
        "process_wall_s": round(wall, 3),
        "answer": result["answer"],
    }


def phase(data: Path, url: str, rounds: int, before_fix_rounds: int) -> dict[str, Any]:
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {kind: {"cli": [], "http": []} for kind in QUESTIONS}
    for question in QUESTIONS.values():
        ask_http(url, question)  # the server's first answer of each kind loads what that route needs
    for number in range(rounds):
        for kind, question in QUESTIONS.items():
            order = ("cli", "http") if number % 2 == 0 else ("http", "cli")
            for side in order:
                sample = ask_cli(data, question) if side == "cli" else ask_http(url, question)
                runs[kind][side].append(sample)
                print(f"round {number} {kind:8} {side:4} {sample['seconds']:.2f} s", file=sys.stderr, flush=True)
    for kind, question in QUESTIONS.items():
        runs[kind]["cli_before_fix"] = []
        for _ in range(before_fix_rounds):
            sample = ask_cli(data, question, before_fix=True)
            runs[kind]["cli_before_fix"].append(sample)
            print(f"before fix {kind:8} cli  {sample['seconds']:.2f} s", file=sys.stderr, flush=True)
    summary: dict[str, Any] = {}
    for kind, sides in runs.items():
        medians = {side: statistics.median(s["seconds"] for s in samples) for side, samples in sides.items() if samples}
        # each round's CLI and HTTP answers ran next to each other, under the same load of the moment
        paired = [c["seconds"] / h["seconds"] for c, h in zip(sides["cli"], sides["http"], strict=True)]
        summary[kind] = {
            "question": QUESTIONS[kind],
            "median_s": {side: round(value, 3) for side, value in medians.items()},
            "ratio_cli_to_http": round(statistics.median(paired), 3),
            "ratio_of_medians": round(medians["cli"] / medians["http"], 3),
            "ratio_before_fix_to_http": round(medians["cli_before_fix"] / medians["http"], 3)
            if "cli_before_fix" in medians
            else None,
            "cli_model_load_median_s": round(statistics.median(s["model_load_s"] for s in sides["cli"]), 3),
            "answers": sorted({s["answer"] for samples in sides.values() for s in samples}),
            "runs": sides,
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before-fix-rounds", type=int, default=2)
    parser.add_argument("--work", type=Path, default=ROOT / ".cache" / "bench-cli-vs-server")
    args = parser.parse_args()
    data = build_data(args.work)
    phases: dict[str, Any] = {}
    with server(data, args.work / "server.log") as url:
        phases["idle"] = {"load_before": os.getloadavg()[0], **phase(data, url, args.rounds, args.before_fix_rounds)}
        with busy(1):
            time.sleep(2)
            phases["loaded"] = {
                "busy_processes": 1,
                **phase(data, url, args.rounds, args.before_fix_rounds),
            }
    ratios = [phases[p][kind]["ratio_cli_to_http"] for p in phases for kind in QUESTIONS]
    write_result(
        "cli_vs_server.json",
        {
            "benchmark": "cli_vs_server",
            "when": now(),
            "machine": machine(),
            "rounds": args.rounds,
            "measure": "CLI: time inside `trellis ask --timing` with its models and indexes loaded (load apart); "
            "HTTP: client wall time of POST /ask on a warm `trellis serve` (round trip included); "
            "ratio_cli_to_http: the median over rounds of CLI / HTTP of the same round (ratio_of_medians beside it); "
            "ratio_before_fix_to_http: median CLI before the fix / median HTTP",
            "target_ratio": 1.2,
            "worst_ratio": max(ratios),
            "meets_target": max(ratios) <= 1.2,
            "note": "one machine shared with other work: its own load is reported as load_before, not controlled",
            "phases": phases,
        },
    )


if __name__ == "__main__":
    main()
