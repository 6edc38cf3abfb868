"""How many CPU threads the library computes with: one policy for every method.

PyTorch splits each operation over ``torch.get_num_threads()`` threads (one per core), and the
next operation starts when the last thread has finished. On an idle machine that pays for
large operations. When another program keeps a core busy, the thread that shares that core
arrives late at every operation, and the others wait for it: the course's work is thousands of
small operations (one image through ShapesNet is a few dozen, each well under a millisecond),
so a lecture that ran in 12-15 s on an idle 2-core laptop took 34-76 s next to one busy
program. One thread is never late.

The policy, which ``targets.explaining`` applies to every method of the library:

- the caller's setting is kept when its threads make a small convolution (``probe``) at least
  ``SPEEDUP_NEEDED`` times faster than one thread does: an idle machine;
- otherwise the method computes on one thread: a busy machine, where one thread is as fast for
  large operations and much faster for small ones.

The probe takes a few milliseconds and is repeated at most every ``PROBE_EVERY_S`` seconds, so
the policy follows a laptop that becomes busy or idle during a lecture. The caller's setting
is restored when the method returns (also when it raises); a caller who set one thread keeps
one thread, without probing.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

PROBE_EVERY_S = 10.0
"""Seconds a decision is kept before the probe runs again."""

SPEEDUP_NEEDED = 1.25
"""How much faster than one thread the caller's threads must run the probe to be kept. On an
idle machine with two cores two threads can run it up to twice as fast; next to a program that
keeps one core busy, at best as fast as one thread (half of the work waits for the shared
core; measured on a 2-core machine running several other programs: 50 to 100 times slower)."""

PROBE_REPEATS = 3

_decisions: dict[int, tuple[float, int]] = {}  # caller's threads -> (when decided, threads)
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


def threads_for_small_work(caller: int | None = None) -> int:
    """The threads the library computes with when the caller has set ``caller`` threads
    (default: the current setting): ``caller`` on an idle machine, 1 on a busy one."""
    caller = torch.get_num_threads() if caller is None else caller
    if caller <= 1:
        return caller
    with _lock:
        now = time.monotonic()
        decided = _decisions.get(caller)
        if decided is None or now - decided[0] > PROBE_EVERY_S:
            threads = caller if probe(caller) >= SPEEDUP_NEEDED else 1
            decided = _decisions[caller] = (time.monotonic(), threads)
        return decided[1]


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
    """Drop the decisions made so far: the next method probes again."""
    with _lock:
        _decisions.clear()
