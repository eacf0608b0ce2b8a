"""Benchmark: concurrent clients against `POST /ask` of a `trellis serve` process on the MetaQA KG.

Two phases, each against a fresh server process on a free loopback port:
  load      the shipped queue bound (workers + queue >= clients): every request must be answered, no 429, no 5xx;
  overload  a queue bound below the number of clients: 429s must appear, and only when the server already
            holds as many questions as its bound (each 429 body says how many it held; the server's count is
            the one that matters, since requests sent together reach it in any order).
Clients are closed-loop (each sends its next question when the last is answered) and honour Retry-After. The
load phase starts with one client alone on the same server, so throughput is compared side by side.
Writes bench/results/load.json.

    python bench/load.py [--clients 32] [--seconds 60] [--overload-seconds 20] [--overload-queue 6]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.results_io import machine, now, write_result  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "metaqa"
DEFAULT_DATA = ROOT / ".cache" / "bench-load"
TRELLIS = Path(sys.executable).with_name("trellis")


@dataclass
class Sample:
    sent: float
    seconds: float
    status: int
    in_flight: int  # requests this process had open when it sent this one, itself included
    correct: bool | None = None
    outstanding: int | None = None  # the server's count, from a 429 body


def questions(limit_per_file: int = 500) -> list[tuple[str, set[str]]]:
    """MetaQA 1-hop and 2-hop dev questions with their gold answers, shuffled with a fixed seed."""
    found = []
    for hops in (1, 2):
        lines = (SHARED / f"qa_{hops}hop_dev.tsv").read_text(encoding="utf-8").splitlines()[:limit_per_file]
        found += [(q, set(a.split("|"))) for q, a in (line.split("\t") for line in lines)]
    random.Random(7).shuffle(found)
    return found


def prepare(data_dir: Path) -> None:
    """Load the MetaQA KG and its relation schema into `data_dir` once (through the CLI)."""
    if (data_dir / "graph.lbug").exists() and (data_dir / "relation_schema.json").exists():
        return
    schema = ROOT / "examples" / "metaqa" / "relations.json"
    command = [str(TRELLIS), "ingest-triples", str(SHARED / "kb.tsv"), "--schema", str(schema)]
    subprocess.run([*command, "--data-dir", str(data_dir)], check=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """A `trellis serve` child process with the given TRELLIS_* overrides (`env`: the environment to start from,
    default this process's), its log in `log` (default `server.log` beside the data directory)."""

    def __init__(self, data_dir: Path, log: Path | None = None, env: dict[str, str] | None = None, **settings: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environment = {**(os.environ if env is None else env), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        environment.update({f"TRELLIS_{k.upper()}": v for k, v in settings.items()})
        command = [str(TRELLIS), "serve", "--port", str(self.port), "--data-dir", str(data_dir)]
        self.log = log or data_dir.parent / "server.log"
        with self.log.open("wb") as sink:  # a file, not a pipe: uvicorn's log must never fill a pipe nobody reads
            self.process = subprocess.Popen(command, env=environment, stdout=sink, stderr=sink)

    def wait_ready(self, timeout: float = 300, models: bool = False) -> None:
        """Until the server answers `/health` (and, with `models`, reports its models loaded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200 and (
                    not models or httpx.get(f"{self.url}/status", timeout=5).json().get("models_loaded")
                ):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise RuntimeError("server did not become ready")

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return round(int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024, 1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


async def drive(url: str, clients: int, seconds: float, items: list[tuple[str, set[str]]]) -> list[Sample]:
    samples: list[Sample] = []
    in_flight = 0
    stop_at = time.perf_counter() + seconds
    # Idle connections expire on the client before uvicorn's 5 s keep-alive closes them on the server: otherwise a
    # client waking from Retry-After can write into a connection the server is closing (a ReadError).
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients, keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:

        async def client(number: int) -> None:
            nonlocal in_flight
            position = number
            while time.perf_counter() < stop_at:
                question, gold = items[position % len(items)]
                position += clients
                in_flight += 1
                sample = Sample(time.perf_counter(), 0.0, 0, in_flight)
                try:
                    response = await http.post("/ask", json={"question": question})
                except httpx.TransportError:
                    sample.seconds = time.perf_counter() - sample.sent
                    samples.append(sample)  # status 0: no HTTP answer at all, counted apart from 5xx
                    continue
                finally:
                    in_flight -= 1
                sample.seconds = time.perf_counter() - sample.sent
                sample.status = response.status_code
                if response.status_code == 200:
                    sample.correct = response.json()["answer"] in gold
                elif response.status_code == 429:
                    sample.outstanding = response.json()["error"].get("outstanding")
                samples.append(sample)
                if response.status_code == 429:
                    await asyncio.sleep(float(response.headers.get("retry-after", "1")))

        await asyncio.gather(*(client(n) for n in range(clients)))
    return samples


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def summarise(samples: list[Sample], seconds: float, limit: int) -> dict[str, Any]:
    ok = [s for s in samples if s.status == 200]
    refused = [s for s in samples if s.status == 429]
    statuses: dict[str, int] = {}
    for s in samples:
        statuses[str(s.status)] = statuses.get(str(s.status), 0) + 1
    latencies = [s.seconds for s in ok]
    return {
        "requests": len(samples),
        "statuses": statuses,
        "server_errors_5xx": sum(s.status >= 500 for s in samples),
        "transport_errors": sum(s.status == 0 for s in samples),
        "answered_per_s": round(len(ok) / seconds, 2),
        "latency_s": {
            "p50": percentile(latencies, 0.5),
            "p95": percentile(latencies, 0.95),
            "p99": percentile(latencies, 0.99),
            "mean": round(statistics.fmean(latencies), 3) if latencies else 0.0,
        },
        "hits_at_1": round(sum(bool(s.correct) for s in ok) / len(ok), 4) if ok else 0.0,
        "queue_limit": limit,
        "refused_429": len(refused),
        "refused_below_limit": sum(1 for s in refused if s.outstanding is None or s.outstanding < limit),
        "server_outstanding_at_429": sorted({s.outstanding for s in refused if s.outstanding is not None}),
        "client_in_flight_max": max((s.in_flight for s in samples), default=0),
    }


def phase(
    data_dir: Path, clients: int, seconds: float, items: list, workers: int, queue: int, baseline_seconds: float = 0
) -> dict[str, Any]:
    """One server; optionally a single client first (the same server, side by side), then `clients` at once."""
    server = Server(data_dir, generation_workers=str(workers), generation_queue=str(queue))
    baseline = None
    try:
        server.wait_ready()
        status = httpx.get(f"{server.url}/status", timeout=30).json()
        if baseline_seconds:
            single = summarise(asyncio.run(drive(server.url, 1, baseline_seconds, items)), baseline_seconds, 1)
            baseline = {k: single[k] for k in ("requests", "answered_per_s", "latency_s", "hits_at_1")}
        samples = asyncio.run(drive(server.url, clients, seconds, items))
        result = summarise(samples, seconds, workers + queue)
        if baseline:
            result["one_client_first"] = baseline
            result["throughput_vs_one_client"] = round(result["answered_per_s"] / baseline["answered_per_s"], 2)
        result["server_peak_rss_mb"] = server.peak_rss_mb()
        result["server_generation"] = httpx.get(f"{server.url}/status", timeout=30).json()["generation"]
        result["entities"] = status["entities"]
    finally:
        server.stop()
    return {"clients": clients, "seconds": seconds, "workers": workers, "queue": queue, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=2, help="TRELLIS_GENERATION_WORKERS (the default)")
    parser.add_argument("--queue", type=int, default=32, help="TRELLIS_GENERATION_QUEUE for the load phase")
    parser.add_argument("--baseline-seconds", type=float, default=20, help="one client first, same server")
    parser.add_argument("--overload-seconds", type=float, default=20)
    parser.add_argument("--overload-queue", type=int, default=6)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()

    prepare(args.data_dir)
    items = questions()
    print(f"load: {args.clients} clients for {args.seconds:.0f} s", file=sys.stderr)
    load = phase(args.data_dir, args.clients, args.seconds, items, args.workers, args.queue, args.baseline_seconds)
    print(f"overload: queue bound {args.workers + args.overload_queue}", file=sys.stderr)
    overload = phase(args.data_dir, args.clients, args.overload_seconds, items, args.workers, args.overload_queue)
    checks = {
        "no_5xx": load["server_errors_5xx"] == 0 and overload["server_errors_5xx"] == 0,
        "every_request_answered": load["transport_errors"] == 0 and overload["transport_errors"] == 0,
        "no_429_within_bound": load["refused_429"] == 0,
        "429_only_past_bound": overload["refused_429"] > 0 and overload["refused_below_limit"] == 0,
    }
    write_result(
        "load.json",
        {
            "benchmark": "load",
            "when": now(),
            "machine": machine(),
            "questions": "MetaQA 1-hop and 2-hop dev (first 500 of each, shuffled), POST /ask",
            "load": load,
            "overload": overload,
            "checks": checks,
        },
    )
    if not all(checks.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
