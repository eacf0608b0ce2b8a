"""Torch's CPU threads are chosen once, from the settings, for every entry point that loads a model."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

PROBE = """
import torch
from agents.resources import Resources
from config import Settings
from graph.backends import open_store
settings = Settings(data_dir={data_dir!r})
open_store(settings).close()  # an empty store to open the resources over
Resources.open(settings).embedder
print(torch.get_num_threads())
"""


def test_trellis_cpu_threads_sets_torchs_threads_when_a_model_loads(tmp_path) -> None:
    wanted = 1 if torch.get_num_threads() > 1 else 2
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TRELLIS_CPU_THREADS": str(wanted)}
    probe = PROBE.format(data_dir=str(tmp_path / "data"))
    run = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert int(run.stdout.split()[-1]) == wanted
