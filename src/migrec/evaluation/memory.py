"""Peak resident memory and wall time of a block of code.

    with PeakMemory() as pm:
        model.fit(train)
    pm.seconds, pm.peak_mb

A daemon thread samples VmRSS from /proc/self/status every `interval` seconds. A spike
shorter than the interval could slip between samples, so the kernel's lifetime peak
(ru_maxrss) is also read: if it rose during the block, the new lifetime peak happened
inside the block and is used. Where /proc is missing (macOS, Windows) only ru_maxrss
is available, which is the process's lifetime peak (an upper bound for the block).
GPU memory is not resident memory; `gpu_peak_mb` reports torch's CUDA peak when torch
is already imported and a GPU is present, else None.
"""
from __future__ import annotations

import sys
import threading
import time

try:
    import resource
except ImportError:  # Windows
    resource = None


def _rss_mb() -> float | None:
    """Current resident set size in MB from /proc, or None where unavailable."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0     # kB -> MB
    except OSError:
        pass
    return None


def _maxrss_mb() -> float | None:
    if resource is None:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0  # bytes on macOS, kB on Linux


def _cuda():
    torch = sys.modules.get("torch")   # never import torch just to measure
    try:
        return torch if torch is not None and torch.cuda.is_available() else None
    except Exception:
        return None


class PeakMemory:
    """Context manager: `.peak_mb` (peak RSS in the block), `.start_mb`, `.seconds`, `.gpu_peak_mb`."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.peak_mb = self.start_mb = self.seconds = None
        self.gpu_peak_mb = None

    def __enter__(self) -> "PeakMemory":
        self._stop = threading.Event()
        self._max_before = _maxrss_mb()
        self.start_mb = _rss_mb()
        self._peak = self.start_mb or 0.0
        cuda = _cuda()
        if cuda is not None:
            cuda.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self._t0 = time.perf_counter()
        return self

    @property
    def peak_so_far_mb(self) -> float:
        """The peak the sampler has seen so far (readable inside the block, e.g. for progress)."""
        return self._peak

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            rss = _rss_mb()
            if rss is not None and rss > self._peak:
                self._peak = rss

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._t0
        self._stop.set()
        self._thread.join()
        rss = _rss_mb()
        peak = max(self._peak, rss or 0.0)
        max_after = _maxrss_mb()
        if max_after is not None and (self.start_mb is None or
                                      (self._max_before is not None and max_after > self._max_before)):
            peak = max(peak, max_after)
        self.peak_mb = peak
        cuda = _cuda()
        if cuda is not None:
            self.gpu_peak_mb = cuda.cuda.max_memory_allocated() / 2 ** 20
