"""What `make demo` shows between its answers: answers, not library warnings or conversion bars (issue 13)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_a_first_question_on_a_fresh_data_dir_prints_no_warnings_or_progress_bars(tmp_path: Path) -> None:
    kb = tmp_path / "kb.tsv"
    kb.write_text("Film A\tdirected_by\tPerson B\nFilm A\twritten_by\tPerson C\n", encoding="utf-8")
    data_dir = tmp_path / "data"  # its model cache is empty: the GGUF is converted during this run
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONWARNINGS": "default"}
    cli = [sys.executable, "-m", "app.cli"]
    subprocess.run([*cli, "ingest-triples", str(kb), "--data-dir", str(data_dir)], env=env, check=True, timeout=300)
    asked = subprocess.run(
        [*cli, "ask", "who directed [Film A]", "--data-dir", str(data_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert asked.returncode == 0, asked.stderr
    assert "Person B" in asked.stdout
    noise = [line for line in asked.stderr.splitlines() if "Warning" in line or "%|" in line or "it/s" in line]
    assert noise == []
