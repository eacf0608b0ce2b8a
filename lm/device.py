"""Where and in which precision models run, and how torch's CPU threads wait.

torch is imported inside the functions, not here: `prepare_cpu_threads` must run before torch (and the OpenMP
runtime it loads) is first imported, because OpenMP reads its wait policy from the environment only then.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# OpenMP's wait policy for torch's intra-op threads. GNU OpenMP's default lets a thread that finished its
# share of an operation spin for up to ~300,000 iterations before sleeping; when another process holds one
# of the cores, the thread it waits for is not running, so every one of the thousands of parallel regions of a
# generation spins through a scheduler slice. Measured here (2 cores, one busy process): the same document
# question took 24-41 s on the main thread and 1.3-1.6 s with PASSIVE. The server looked fast only because its
# questions run on worker threads, which OpenMP counts beyond the cores and so spins for them only briefly.
WAIT_POLICY = "PASSIVE"


def prepare_cpu_threads() -> bool:
    """Choose OpenMP's wait policy for this process (PASSIVE, unless OMP_WAIT_POLICY is already set by the user)
    before torch loads; every entry point (CLI, server, Python API) calls it through `app`'s import.

    Returns False when torch was imported before this call: the policy then stays whatever the runtime read.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)
    return "torch" not in sys.modules


def resolve_device(device: str = "auto") -> str:
    """`auto` is CUDA when a GPU is visible, else the CPU."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("TRELLIS_DEVICE=cuda but torch sees no CUDA device")
    return device


def use_cpu_threads(threads: int | None) -> None:
    """Torch's intra-op threads for this process, chosen once for every entry point (None: torch's default,
    one per core). On a machine whose cores other processes are also using, fewer threads than cores avoids
    threads waiting on each other (the wait policy above removes most of that cost already).
    """
    import torch

    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def cpu_supports_bfloat16() -> bool:
    """Whether this CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX), where bf16 beats float32."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(device: str, dtype: str = "auto") -> torch.dtype:
    """`auto`: bfloat16 on GPUs and on CPUs with native bf16 (measured ~2x faster here), float32 otherwise."""
    import torch

    if dtype != "auto":
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    if device.startswith("cuda") or cpu_supports_bfloat16():
        return torch.bfloat16
    return torch.float32
