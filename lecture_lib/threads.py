"""How many CPU threads the library computes with: one policy for every method.

PyTorch splits each operation over ``torch.get_num_threads()`` threads (one per core), and the
next operation starts when the last thread has finished. On an idle machine that pays for
large operations. When another program keeps a core busy, the thread that shares that core
arrives late at every operation, and the others wait for it: the course's work is thousands of
small operations (one image through ShapesNet is a few dozen, each well under a millisecond),
so a lecture that ran in 12-15 s on an idle 2-core laptop took 34-76 s next to one busy
program. One thread is never late. Every operation counts, not only the model's: in a Jupyter
kernel next to a busy core, the small operations with which a saliency map of 20 shapes checks
its input and finishes its map cost 75 ms on two threads, two and a half times the whole map on
one thread.

The policy: compute with as many of the caller's threads as there are cores that other
programs leave free, at least one. On an idle machine that is the caller's setting; next to a
program that keeps one core of two busy, one thread. Every public function of the library that
computes with torch runs under it from its first operation to its last (``under_policy``; the
internal steps through ``targets.explaining``), and ``tests/test_threads.py`` checks each
operation of each kind of function.

The free cores are read from the operating system's count of CPU time (``/proc/stat`` on
Linux): all programs' CPU seconds since the last look, minus this process's own, over the time
that passed, on the cores this process may run on (``free_cores``; a container given 2 of a
server's 32 cores counts those 2). That average covers the seconds between two decisions, so a
short lull of the other program does not fool it. Only the first decision pauses (``SAMPLE_S``
seconds) to count; later, when the last look is over ``LOOK_BACK_S`` old, the policy takes a
look and keeps its last decision until a call ``SAMPLE_S`` or more later can count from it, so
that no explorer update waits for a count. Where the system has no such count the policy times
a small convolution on the caller's threads and on one (``probe``). A decision is kept for
``DECIDE_EVERY_S`` seconds, so the policy follows a laptop that becomes busy or idle during a
lecture. The caller's setting is restored when the method returns (also when it raises); a
caller who set one thread keeps one thread, without measuring anything.
"""

from __future__ import annotations

import functools
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

import torch
import torch.nn.functional as F

P = ParamSpec("P")
R = TypeVar("R")

DECIDE_EVERY_S = 10.0
"""Seconds a decision is kept before the free cores are counted again."""

SAMPLE_S = 0.05
"""The pause, in seconds, over which the free cores are counted when there was no look at them
in the last ``LOOK_BACK_S`` seconds (five ticks of the system's 100 Hz clock per core)."""

LOOK_BACK_S = 60.0
"""The longest window of CPU time a decision averages over."""

SPEEDUP_NEEDED = 1.25
"""Without a CPU-time count: how much faster than one thread the caller's threads must run the
probe to be kept. On an idle machine with two cores two threads run it 1.3 to 1.7 times as fast;
next to a program that keeps one core busy, mostly no faster, but a lull of the other program
during the few milliseconds of the probe can fool it."""

PROBE_REPEATS = 3

_decisions: dict[int, tuple[float, int]] = {}  # caller's threads -> (when decided, threads)
_look: tuple[float, float, float] | None = None  # last count: (when, all programs' CPU s, ours)
_lock = threading.Lock()


@contextmanager
def policy() -> Iterator[int]:
    """Inside the block torch computes with the number of threads the policy chooses (which
    the block receives); afterwards the caller's setting is back."""
    caller = torch.get_num_threads()
    threads = threads_for_small_work(caller)
    if threads != caller:
        torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        if threads != caller:
            torch.set_num_threads(caller)


def under_policy(function: Callable[P, R]) -> Callable[P, R]:
    """``function`` computing under ``policy()``: for the library's functions that compute with
    torch outside a method (the evaluation's curves, ranks and scores)."""

    @functools.wraps(function)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        with policy():
            return function(*args, **kwargs)

    return run


def threads_for_small_work(caller: int | None = None) -> int:
    """The threads the library computes with when the caller has set ``caller`` threads
    (default: the current setting): as many as there are free cores, at least one, at most
    ``caller``."""
    caller = torch.get_num_threads() if caller is None else caller
    if caller <= 1:
        return caller
    with _lock:
        decided = _decisions.get(caller)
        if decided is not None and time.monotonic() - decided[0] <= DECIDE_EVERY_S:
            return decided[1]
        if decided is not None and not _window_ready():
            return decided[1]  # the last decision, until the count since a fresh look can decide
        free = free_cores()  # the first decision pauses SAMPLE_S to count
        if free is None:  # no CPU-time count on this system
            threads = caller if probe(caller) >= SPEEDUP_NEEDED else 1
        else:
            threads = max(1, min(caller, int(free + 0.25)))  # 1.8 free cores: 2 threads
        _decisions[caller] = (time.monotonic(), threads)
        return threads


def _window_ready() -> bool:
    """Whether the CPU time counted since the last look can decide without a pause: a look
    between ``SAMPLE_S`` and ``LOOK_BACK_S`` seconds ago. Where the last look is older (a
    student read for minutes before moving a slider) a look is taken now, for a later call to
    decide from, and the caller keeps the last decision meanwhile."""
    global _look
    now = time.perf_counter()
    if _look is None or now - _look[0] > LOOK_BACK_S:
        _look = _cpu_seconds()
        return _look is None  # no count on this system: the probe decides at once
    return now - _look[0] >= SAMPLE_S


def free_cores() -> float | None:
    """The cores that other programs left free: the cores this process may run on minus the CPU
    seconds per second that the other programs computed on them since the last look (at most
    ``LOOK_BACK_S`` ago; otherwise over a pause of ``SAMPLE_S`` now). ``None`` where the system
    does not count CPU time."""
    global _look
    now = _cpu_seconds()
    if now is None:
        return None
    before = _look
    if before is None or not SAMPLE_S <= now[0] - before[0] <= LOOK_BACK_S:
        time.sleep(SAMPLE_S)
        before, now = now, _cpu_seconds()
    _look = now
    seconds = now[0] - before[0]
    others = ((now[1] - before[1]) - (now[2] - before[2])) / seconds
    return max(0.0, now[3] - others)


def _cpu_seconds() -> tuple[float, float, float, int] | None:
    """(now, the CPU seconds all programs have computed since the system started on the cores
    this process may run on, this process's, the number of those cores), or ``None`` without
    ``/proc/stat``. A container or ``taskset`` that gives the process 2 of a server's 32 cores
    counts those 2 and what runs on them."""
    try:
        with open("/proc/stat") as stat:
            text = stat.read()
    except OSError:
        return None
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    counted = _busy_seconds(text, allowed)
    if counted is None:
        return None
    busy, cores = counted
    return time.perf_counter(), busy, time.process_time(), cores


def _busy_seconds(stat: str, cores: set[int] | None = None) -> tuple[float, int] | None:
    """From the text of ``/proc/stat``: the CPU seconds computed on ``cores`` (all when
    ``None``), everything but idle and waiting for the disk, and how many of them it counted."""
    busy_ticks, counted = 0, 0
    for line in stat.splitlines():
        fields = line.split()
        name = fields[0] if fields else ""
        if not (name.startswith("cpu") and name[3:].isdigit()):
            continue  # the "cpu" line (all cores) and the rest of the file
        if cores is not None and int(name[3:]) not in cores:
            continue
        try:
            # user, nice, system, idle, waiting for the disk, irq, softirq, steal
            ticks = [int(value) for value in fields[1:9]]
        except ValueError:
            return None
        if len(ticks) < 5:
            return None
        busy_ticks += sum(ticks) - ticks[3] - ticks[4]
        counted += 1
    if counted == 0:
        return None
    return busy_ticks / os.sysconf("SC_CLK_TCK"), counted


def probe(threads: int) -> float:
    """How many times faster ``threads`` threads run a small convolution than one thread: the
    median of ``PROBE_REPEATS`` interleaved timings of each (a few milliseconds in all). The
    setting is restored afterwards."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(4, 32, 32, 32, generator=generator)
    weight = torch.rand(32, 32, 3, 3, generator=generator)
    caller = torch.get_num_threads()
    times: dict[int, list[float]] = {1: [], threads: []}
    try:
        with torch.no_grad():
            for repeat in range(PROBE_REPEATS + 1):
                for count in (1, threads):
                    torch.set_num_threads(count)
                    start = time.perf_counter()
                    F.conv2d(x, weight, padding=1)
                    if repeat:  # the first of each is a warm-up
                        times[count].append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(caller)
    return statistics.median(times[1]) / statistics.median(times[threads])


def forget() -> None:
    """Drop the decisions and the last count of CPU time: the next method measures again."""
    global _look
    with _lock:
        _decisions.clear()
        _look = None
