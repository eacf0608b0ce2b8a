"""Where and in which precision models run."""

from __future__ import annotations

import torch


def resolve_device(device: str = "auto") -> str:
    """`auto` is CUDA when a GPU is visible, else the CPU."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("TRELLIS_DEVICE=cuda but torch sees no CUDA device")
    return device


def use_cpu_threads(threads: int | None) -> None:
    """Torch's intra-op threads for this process, chosen once for every entry point (None: torch's default,
    one per core). On a machine whose cores other processes are also using, fewer threads than cores avoids
    threads waiting on each other: a reported busy-machine generation took 71 s with the default, 10 s with one.
    """
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
    if dtype != "auto":
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    if device.startswith("cuda") or cpu_supports_bfloat16():
        return torch.bfloat16
    return torch.float32
