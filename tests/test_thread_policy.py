"""Every entry point (`app`: the CLI, the server, the Python API) chooses OpenMP's wait policy before torch loads.

The CLI was up to 30x slower than the server on a busy machine: torch's threads spun at every parallel region
while another process held a core (the server's worker threads escaped it). OpenMP reads its policy once, when
the runtime loads with torch; OMP_DISPLAY_ENV=verbose makes each runtime print what it read.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys


def spin_counts(code: str, **env: str) -> list[str]:
    environment = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    environment.update({"OMP_DISPLAY_ENV": "verbose", **env})
    run = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return re.findall(r"GOMP_SPINCOUNT = '(\d+)'", run.stderr)


def test_importing_app_before_torch_makes_its_threads_sleep_instead_of_spinning() -> None:
    counts = spin_counts("import app.cli; import torch; torch.ones(64, 64) @ torch.ones(64, 64)")
    assert counts and set(counts) == {"0"}, counts
    # torch loaded first keeps OpenMP's spinning default: what the CLI did before, and what the test would catch
    assert "300000" in spin_counts("import torch; import app.cli")


def test_a_wait_policy_the_user_set_is_kept() -> None:
    code = "import os, app.library; print(os.environ['OMP_WAIT_POLICY'])"
    environment = {**os.environ, "OMP_WAIT_POLICY": "ACTIVE"}
    run = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split()[-1] == "ACTIVE"


def test_the_langgraph_entry_point_chooses_the_policy_too() -> None:
    """`langgraph.json` loads agents/graph.py without `app`: `agents` itself chooses the policy."""
    counts = spin_counts("import agents.graph; import torch; torch.ones(64, 64) @ torch.ones(64, 64)")
    assert counts and set(counts) == {"0"}, counts
