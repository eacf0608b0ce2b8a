"""Torch's CPU threads never wait on a partner that another process keeps off its core.

The CLI was once up to 30x slower than the server on a busy machine: with OpenMP's spinning default, torch's
threads spun at every parallel region while another process held a core. A sleeping wait policy cured that
but cost a third of the speed on an idle machine (waking a thread for each small operation of a decoding
step). Now the spinning default stays and `IdleCores` gives torch only the cores other processes leave idle.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lm.device import IdleCores

BUSY = "import time\nend = time.monotonic() + 20\nwhile time.monotonic() < end: pass"


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    unset = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "ONEDNN_PRIMITIVE_CACHE_CAPACITY")
    environment = {k: v for k, v in os.environ.items() if k not in unset}
    environment.update(env)
    run = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=environment, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    return run


def test_threads_are_the_cores_others_leave_idle() -> None:
    monitor = IdleCores(stat_path="/nonexistent", most=2)
    monitor.cores = 2
    assert monitor.threads_for(0.0) == 2
    assert monitor.threads_for(0.2) == 2  # a trickle of other work takes no core
    assert monitor.threads_for(0.6) == 1
    assert monitor.threads_for(2.0) == 1  # never fewer than one
    monitor.cores = 16
    monitor.most = 16
    assert monitor.threads_for(3.5) == 12
    assert monitor.fit() is None  # nothing to read: torch's threads are left alone


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="IdleCores reads Linux's /proc/stat")
def test_busy_cores_leave_torch_one_thread_and_a_fixed_count_is_kept() -> None:
    """Other processes spinning on every core: the next forward pass of a CPU module runs on one thread; a
    count the user fixed (`cpu_threads`) is left as it is."""
    code = f"""
        import subprocess, sys, time, os, torch
        from lm.device import IdleCores, fit_threads_to_idle_cores, use_cpu_threads
        torch.set_num_threads(2)
        busy = [subprocess.Popen([sys.executable, "-c", {BUSY!r}]) for _ in range(os.cpu_count() or 1)]
        try:
            layer = torch.nn.Linear(8, 8)
            fit_threads_to_idle_cores(layer, "cpu")
            time.sleep(0.6)
            layer(torch.ones(1, 8))
            print("fitted", torch.get_num_threads())
            use_cpu_threads(2)
            time.sleep(0.6)
            layer(torch.ones(1, 8))
            print("fixed", torch.get_num_threads())
        finally:
            for process in busy:
                process.kill()
                process.wait()
    """
    out = run_python(code).stdout
    assert "fitted 1" in out, out
    assert "fixed 2" in out, out


def test_importing_app_keeps_openmps_spinning_default() -> None:
    """No sleeping wait policy is forced on the runtime (`OMP_DISPLAY_ENV=verbose` prints what it read); a
    policy the user sets is kept."""
    code = "import app.cli; import torch; torch.ones(64, 64) @ torch.ones(64, 64)"
    counts = re.findall(r"GOMP_SPINCOUNT = '(\d+)'", run_python(code, OMP_DISPLAY_ENV="verbose").stderr)
    assert counts and set(counts) == {"300000"}, counts
    chosen = run_python(code, OMP_DISPLAY_ENV="verbose", OMP_WAIT_POLICY="PASSIVE").stderr
    assert set(re.findall(r"GOMP_SPINCOUNT = '(\d+)'", chosen)) == {"0"}


def test_onednn_keeps_few_compiled_shapes_unless_the_user_says() -> None:
    """oneDNN compiles a primitive for every shape it meets and by default keeps 1,024: a process answering
    questions of ever new prompt lengths grew with no plateau. Loading a model module bounds the cache first."""
    code = "import os, lm.model, torch; print(os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'])"
    assert run_python(code).stdout.split()[-1] == "8"
    assert run_python(code, ONEDNN_PRIMITIVE_CACHE_CAPACITY="256").stdout.split()[-1] == "256"
