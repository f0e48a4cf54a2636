"""What every benchmark row records besides its time: peak memory, the other processes' CPU, threads, commit.

- `PeakRSS`: the peak resident memory of this process while the context is open, sampled every
  5 ms by a thread (psutil). `resource` maxrss is a lifetime peak and tracemalloc does not see
  torch's allocator; the row reports the peak above the resident memory before the call. Before
  each measured call glibc's `malloc_trim(0)` hands the memory freed by earlier calls back to the
  system, so a call that reuses it still shows its own peak (without the trim, the rows measured
  after a hungrier one read ~0). Sampling can miss a peak shorter than 5 ms.
- `Timed`: wall clock of one measured call, with the CPU time that *other* processes used during
  it, in cores (system busy time minus this process's own, from psutil), since the machine is
  shared. A row's `other_cpu_cores` is the mean over its timed calls.
- `commit()`: `git rev-parse --short HEAD` of the working tree (with `+dirty` when it has changes),
  or "unknown" outside a git checkout.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import statistics
import subprocess
import threading
import time
from pathlib import Path

import psutil

_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def release_free_memory() -> None:
    """Return the heap memory freed so far to the system (glibc `malloc_trim`; a no-op elsewhere)."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


class PeakRSS:
    """Peak RSS (bytes) of this process while the context is open, sampled every `interval` s."""

    def __init__(self, interval: float = 0.005):
        self.process, self.interval, self.peak, self.before = psutil.Process(), interval, 0, 0
        self._stop = threading.Event()

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self):
        release_free_memory()
        self.before = self.peak = self.process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def cpu_busy_s() -> float:
    """System-wide busy CPU seconds so far (all cores)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def own_cpu_s(process: psutil.Process) -> float:
    t = process.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


class Samples:
    """Timed calls of one variant: wall seconds, peak RSS above the start, other processes' CPU."""

    def __init__(self):
        self.times: list[float] = []
        self.peak = 0
        self.other_s = 0.0
        self._process = psutil.Process()

    def time(self, fn, *args, count: bool = True, **kwargs):
        """Call `fn(*args, **kwargs)`, timed; with count=False (warm-up) the numbers are dropped."""
        busy0, own0 = cpu_busy_s(), own_cpu_s(self._process)
        with PeakRSS() as rss:
            start = time.perf_counter()
            result = fn(*args, **kwargs)
            elapsed = time.perf_counter() - start
        other = max(0.0, (cpu_busy_s() - busy0) - (own_cpu_s(self._process) - own0))
        if count:
            self.add(elapsed, rss.peak - rss.before, other)
        return result

    def add(self, elapsed: float, peak_bytes: int, other_cpu_s: float) -> None:
        self.times.append(elapsed)
        self.peak = max(self.peak, peak_bytes)
        self.other_s += other_cpu_s

    def summary(self) -> dict[str, float]:
        """median_s, min_s, max_s, peak_rss_delta_mib, other_cpu_cores, timed (the row's measured part)."""
        if not self.times:
            raise ValueError("no timed calls")
        return {
            "timed": len(self.times),
            "median_s": statistics.median(self.times),
            "min_s": min(self.times),
            "max_s": max(self.times),
            "peak_rss_delta_mib": self.peak / 2**20,
            "other_cpu_cores": self.other_s / sum(self.times),
        }


def commit(root: str | Path | None = None) -> str:
    """The checkout's short commit, `+dirty` if it has uncommitted changes; "unknown" without git."""
    root = Path(root) if root is not None else Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")
