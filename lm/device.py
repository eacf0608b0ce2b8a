"""Where and in which precision models run, and how many CPU threads torch uses."""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# OpenMP's wait policy for torch's intra-op threads is left to the runtime. GNU OpenMP's default lets a thread
# that finished its share of an operation spin for up to ~300,000 iterations before it sleeps, which on an idle
# machine is what makes a small model's decoding fast (waking a sleeping thread for each of a decoding step's
# ~600 small operations cost 60 ms a step here, against 37 ms spinning). Spinning is ruinous only where the
# partner a thread waits for is not running because another process holds its core (a document question took
# 24-41 s instead of 1.3-1.6 s): `IdleCores` keeps torch off the cores other processes are using, so no thread
# waits on a partner that is not running. A user's OMP_WAIT_POLICY is read by the runtime as ever.


# oneDNN (torch's CPU kernels for bfloat16 matrix products) keeps up to 1,024 compiled primitives, one for each
# shape met; every new prompt length is a new shape, so a process answering questions grew by 10-12 MB a
# question with no plateau (MuSiQue, 100 questions: peak RSS 2,272 MB). A handful covers one forward pass's
# distinct shapes, which is what a decoding loop reuses: with 8, peak RSS 1,713 MB at the same p50 (1.30 vs
# 1.33 s). Read by oneDNN when it makes its first primitive, so this is set on import, before any model runs;
# a value the user set is kept.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8")


@dataclass(frozen=True, slots=True)
class CpuSample:
    at: float  # monotonic seconds
    busy: float  # CPU seconds all cores spent on anything (stolen time included), from /proc/stat
    own: float  # CPU seconds this process spent


class IdleCores:
    """Torch's CPU threads fitted to the cores that other processes leave idle (Linux; elsewhere it does nothing).

    Between two samples at least `WINDOW_S` apart, the cores other processes used are all cores' busy time
    less this process's own, over the wall time. A core counts as taken when others used more than
    `TAKEN_SHARE` of one; torch then runs on the cores left (at least one, at most its own default). Assumes
    /proc/stat counts the cores this process may run on (a VM or a whole machine; a container whose CPU quota
    is smaller than the host sees other tenants' load too, and only ever uses fewer threads for it).
    """

    WINDOW_S = 0.25
    TAKEN_SHARE = 0.25

    def __init__(self, stat_path: str = "/proc/stat", most: int | None = None) -> None:
        import torch

        self.stat_path = stat_path
        self.cores = os.cpu_count() or 1
        self.most = most or torch.get_num_threads()
        self.threads = self.most
        self._lock = threading.Lock()
        self._last = self.sample()

    def sample(self) -> CpuSample | None:
        try:
            with open(self.stat_path, encoding="ascii") as handle:
                fields = [int(f) for f in handle.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        if len(fields) < 8:
            return None
        # user nice system idle iowait irq softirq steal; guest time is already inside user
        busy = sum(fields) - fields[3] - fields[4]
        return CpuSample(time.monotonic(), busy / os.sysconf("SC_CLK_TCK"), time.process_time())

    def threads_for(self, others: float) -> int:
        taken = max(0, math.ceil(others - self.TAKEN_SHARE))
        return max(1, min(self.most, self.cores - taken))

    def fit(self) -> int | None:
        """Set torch's threads for the calling thread (OpenMP counts threads per calling thread) by what the
        cores did in the last closed window; the count, or None where there is nothing to measure."""
        import torch

        if self._last is None:
            return None
        # /proc/stat is read only once a window has closed: a decoding loop calls this at every token
        if time.monotonic() - self._last.at >= self.WINDOW_S:
            with self._lock:
                now = self.sample()
                if now is not None and now.at - self._last.at >= self.WINDOW_S:
                    others = ((now.busy - self._last.busy) - (now.own - self._last.own)) / (now.at - self._last.at)
                    self.threads = self.threads_for(max(0.0, others))
                    self._last = now
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        return self.threads


_threads_fixed = False  # the user chose a count (`cpu_threads`): nothing is fitted


@lru_cache(maxsize=1)
def idle_cores() -> IdleCores:
    """The process's one monitor, made when a CPU model first asks for it."""
    return IdleCores()


def fit_threads_to_idle_cores(module: torch.nn.Module, device: str) -> None:
    """Before each forward pass of `module` on the CPU, fit torch's threads to the idle cores (`IdleCores`),
    unless the user fixed the thread count."""
    if not device.startswith("cpu"):
        return
    monitor = idle_cores()

    def before_forward(*_: Any) -> None:
        if not _threads_fixed:
            monitor.fit()

    module.register_forward_pre_hook(before_forward)


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
    one per core, fitted to the idle cores before each forward pass: `fit_threads_to_idle_cores`). A fixed
    count is kept whatever the other processes do.
    """
    import torch

    global _threads_fixed
    if threads is not None:
        _threads_fixed = True
        if torch.get_num_threads() != threads:
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
