"""How the benchmarks time: the median of repeated runs, runs paired with a baseline in the same
moment, and that baseline (one forward + backward pass to the input).

The scripts run from the repository root (``python benchmarks/<script>.py``); Python then
finds this module beside them.
"""

from __future__ import annotations

import statistics
import time

import torch


def median_time(fn, repeat: int) -> float:
    """The median of ``repeat`` wall-clock times of ``fn()``, after one warm-up call."""
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def paired(fn, base_fn, repeat: int, per: int = 1) -> tuple[float, float, float]:
    """fn against ``per`` runs of base_fn, the same amount of work, one right after the other
    (in alternating order, so that a trend in the machine's load cancels out). Returns the
    median seconds of fn / per, the median ratio of wall-clock times and that of the
    process's CPU times (user + system, all threads)."""
    fn(), base_fn()  # warm-up
    seconds, ratios, cpu_ratios = [], [], []
    for round_ in range(repeat):
        times = {}
        for name in ("base", "fn") if round_ % 2 == 0 else ("fn", "base"):
            wall, cpu = time.perf_counter(), time.process_time()
            if name == "fn":
                fn()
            else:
                for _ in range(per):
                    base_fn()
            times[name] = (time.perf_counter() - wall, time.process_time() - cpu)
        seconds.append(times["fn"][0] / per)
        ratios.append(times["fn"][0] / times["base"][0])
        cpu_ratios.append(times["fn"][1] / times["base"][1])
    return statistics.median(seconds), statistics.median(ratios), statistics.median(cpu_ratios)


def forward_backward(model, x, target):
    """The baseline: one forward pass and one backward pass of the target score to the input."""
    x = x.clone().requires_grad_(True)
    score = model(x).gather(1, target[:, None]).sum()
    torch.autograd.grad(score, x)
