"""Timing helpers for the benchmarks: warm-up, interleaved rounds, medians, paired ratios.

Benchmarks report RATIOS of things measured in the same run on the same inputs. Candidates are
timed round-robin (A, B, C, A, B, C, ...), so slow drifts of a shared or virtual machine hit
all of them alike, and a ratio is the median of the per-round ratios. One call is timed by
`trainables.timing` (CUDA events on a GPU), the timer the training loop's `time/epoch_s` and
`time/mix_s` come from.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch

from trainables.timing import time_call


def interleaved(fns: dict[str, tuple[Callable[[], object], torch.device]], *, rounds: int = 7,
                warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each candidate in every round; candidates run round-robin after a warm-up."""
    for _ in range(warmup):
        for fn, device in fns.values():
            time_call(fn, device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, (fn, device) in fns.items():
            times[name].append(time_call(fn, device))
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of numerator/denominator (same round = same machine state)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator))


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    import platform

    cpu = platform.processor() or platform.machine()
    return f"CPU {cpu}, {torch.get_num_threads()} threads (torch {torch.__version__})"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
