"""Timing work on a device: the one timer the training loop and the benchmarks (`bench/`) share.

On a CUDA device the work is asynchronous: `time.perf_counter()` around it measures how long the
host took to queue kernels, not how long they ran. `DeviceTimer` records a pair of CUDA events
around every region there and reads them once, after one synchronisation, when asked for the total
(so timing many small regions, e.g. the mixing of every batch, adds no synchronisation per step).
On the CPU, and for wall-clock time (`device=None`), it adds up `perf_counter()` differences.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch


class DeviceTimer:
    """Adds up the seconds spent inside `region()`s.

    Args:
        device: where the timed work runs; CUDA devices are timed with CUDA events, anything else
            (and None: wall-clock time) with `time.perf_counter()`.
    """

    def __init__(self, device: torch.device | str | None) -> None:
        self.cuda = device is not None and torch.device(device).type == "cuda"
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self._seconds = 0.0

    @contextmanager
    def region(self) -> Iterator[None]:
        """Time the body of the `with` block (added to the total)."""
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                yield
            finally:
                end.record()
                self._events.append((start, end))
            return
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._seconds += time.perf_counter() - t0

    def seconds(self) -> float:
        """The total so far (synchronises a CUDA device once when regions are pending)."""
        if self._events:
            torch.cuda.synchronize()
            self._seconds += sum(a.elapsed_time(b) for a, b in self._events) / 1000.0
            self._events.clear()
        return self._seconds


def time_call(fn: Callable[[], object], device: torch.device | str | None) -> float:
    """Seconds one call of `fn` takes on `device` (see `DeviceTimer`)."""
    timer = DeviceTimer(device)
    with timer.region():
        fn()
    return timer.seconds()
