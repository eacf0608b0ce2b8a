"""A full disk (issue 13, item 16): a one-line error naming the data dir, `status` still readable, and a
re-run after space is freed completes. Needs a small tmpfs, so root and `mount`; skips elsewhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import METAQA_KB

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def trellis(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "app.cli", *args]
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount_point)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def grow(mount_point: Path) -> None:
    subprocess.run(["mount", "-o", "remount,size=300m", str(mount_point)], check=True)


@pytest.mark.skipif(not METAQA_KB.exists(), reason=f"{METAQA_KB} not found")
def test_a_full_disk_is_one_line_status_still_reads_and_a_rerun_completes(small_disk: Path, tmp_path: Path) -> None:
    data_dir = small_disk / "data"
    first = tmp_path / "first.tsv"
    first.write_text("".join(METAQA_KB.open(encoding="utf-8").readlines()[:3000]), encoding="utf-8")
    assert trellis("ingest-triples", str(first), "--data-dir", str(data_dir)).returncode == 0
    before = json.loads(trellis("status", "--json", "--data-dir", str(data_dir)).stdout)

    full = trellis("ingest-triples", str(METAQA_KB), "--data-dir", str(data_dir))
    assert full.returncode == 1
    errors = [line for line in full.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "Traceback" not in full.stderr, full.stderr
    assert "no space left" in errors[0] and str(data_dir) in errors[0]

    status = trellis("status", "--json", "--data-dir", str(data_dir))
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout) == before  # what the earlier run stored, readable on the full disk

    grow(small_disk)
    again = trellis("ingest-triples", str(METAQA_KB), "--data-dir", str(data_dir))
    assert again.returncode == 0, again.stderr
    after = json.loads(trellis("status", "--json", "--data-dir", str(data_dir)).stdout)
    assert after["relations"] > before["relations"]
