"""What `make demo` shows between its answers: answers, not library warnings or conversion bars (issue 13)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

from config import Settings


@pytest.mark.slow
def test_a_first_question_on_a_fresh_data_dir_prints_no_warnings_or_progress_bars(tmp_path: Path) -> None:
    kb = tmp_path / "kb.tsv"
    kb.write_text("Film A\tdirected_by\tPerson B\nFilm A\twritten_by\tPerson C\n", encoding="utf-8")
    data_dir = tmp_path / "data"
    cache = tmp_path / "models"  # empty: the GGUF is converted during this run
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONWARNINGS": "default",
        "TRELLIS_MODEL_CACHE": str(cache),
    }
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
    # The converted copy is stored in the precision the model runs in, named by it.
    (converted,) = cache.iterdir()
    precision = converted.name.rsplit("-", 1)[1]
    with safe_open(converted / "model.safetensors", framework="pt") as weights:
        assert {str(weights.get_slice(k).get_dtype()) for k in weights.keys()} == {PRECISION_CODES[precision]}  # noqa: SIM118 (not a dict)


PRECISION_CODES = {"bfloat16": "BF16", "float32": "F32", "float16": "F16"}


def test_every_data_dir_shares_one_model_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRELLIS_MODEL_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    first, second = Settings(data_dir=tmp_path / "a"), Settings(data_dir=tmp_path / "b")
    assert first.model_cache_dir == second.model_cache_dir == tmp_path / "xdg" / "trellis" / "models"
