"""kill -9 during ingestion: the store holds all of a run or none of it, and re-running converges."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest


def trellis(*args: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", *args]


def counts(data_dir: Path) -> tuple[int, int]:
    status = subprocess.run(trellis("status", "--json", "--data-dir", str(data_dir)), capture_output=True, text=True)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    return report["entities"], report["relations"]


@pytest.fixture(scope="module")
def slice_kb(metaqa_kb: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[int, int], float]:
    """A 60k-line MetaQA slice, the counts it should produce, and how long an uninterrupted load takes."""
    tmp = tmp_path_factory.mktemp("crash")
    lines = metaqa_kb.read_text(encoding="utf-8").splitlines()[:60_000]
    kb = tmp / "kb.tsv"
    kb.write_text("\n".join(lines) + "\n", encoding="utf-8")
    triples = {tuple(line.split("\t")) for line in lines}
    expected = (len({n for h, _r, t in triples for n in (h, t)}), len(triples))
    start = time.monotonic()
    subprocess.run(
        trellis("ingest-triples", str(kb), "--data-dir", str(tmp / "whole")), check=True, capture_output=True
    )
    uninterrupted = time.monotonic() - start
    assert counts(tmp / "whole") == expected
    return kb, expected, uninterrupted


@pytest.mark.parametrize(
    "fraction", [pytest.param(0.5, marks=pytest.mark.slow), 0.8, pytest.param(0.95, marks=pytest.mark.slow)]
)
def test_killed_ingestion_is_all_or_nothing_and_rerun_converges(
    slice_kb: tuple[Path, tuple[int, int], float], tmp_path: Path, fraction: float
) -> None:
    kb, expected, uninterrupted = slice_kb
    data_dir = tmp_path / "killed"
    victim = subprocess.Popen(
        trellis("ingest-triples", str(kb), "--data-dir", str(data_dir)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(uninterrupted * fraction)
    victim.kill()
    victim.wait()
    assert counts(data_dir) in {(0, 0), expected}

    rerun = subprocess.run(
        trellis("ingest-triples", str(kb), "--data-dir", str(data_dir)), capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr
    assert counts(data_dir) == expected


def manifest_states(data_dir: Path) -> dict[str, int]:
    import sqlite3

    path = data_dir / "manifest.sqlite"
    if not path.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
            return dict(db.execute("SELECT state, count(*) FROM documents GROUP BY state").fetchall())
    except sqlite3.Error:
        return {}


def store_counts(data_dir: Path) -> dict[str, int]:
    status = subprocess.run(trellis("status", "--json", "--data-dir", str(data_dir)), capture_output=True, text=True)
    assert status.returncode == 0, status.stderr
    return {k: v for k, v in json.loads(status.stdout).items() if k not in ("data_dir", "backend")}


def test_killed_document_ingestion_converges(tmp_path: Path) -> None:
    from tests.conftest import SHARED_DATA

    passages = json.loads((SHARED_DATA / "musique" / "corpus.json").read_text(encoding="utf-8"))[:60]
    corpus = tmp_path / "corpus.json"
    corpus.write_text(json.dumps(passages), encoding="utf-8")
    # Small batches saved at once, so that a kill lands between saved and unsaved work.
    env = {**os.environ, "TRELLIS_INGEST_BATCH_DOCUMENTS": "10", "TRELLIS_INDEX_SAVE_SECONDS": "0"}

    whole = tmp_path / "whole"
    subprocess.run(trellis("ingest", str(corpus), "--data-dir", str(whole)), env=env, check=True, capture_output=True)
    expected = store_counts(whole)
    assert expected["documents"] == 60 and expected["chunks"] == expected["vectors"]

    killed = tmp_path / "killed"
    victim = subprocess.Popen(
        trellis("ingest", str(corpus), "--data-dir", str(killed)),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while manifest_states(killed).get("done", 0) < 10 and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    victim.kill()
    victim.wait()
    # the extraction worker dies with its parent (kill -9 included): nothing still names the data dir
    deadline = time.monotonic() + 10
    while _processes_naming(killed) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _processes_naming(killed), "an extraction worker outlived its killed parent"
    states = manifest_states(killed)
    assert 0 < states.get("done", 0) < 60, f"the kill did not land part-way: {states}"

    rerun = subprocess.run(
        trellis("ingest", str(corpus), "--data-dir", str(killed)), env=env, capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr
    assert store_counts(killed) == expected
    assert manifest_states(killed) == {"done": 60}


def _processes_naming(path: Path) -> list[int]:
    """PIDs of processes whose command line names `path` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(path).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found
