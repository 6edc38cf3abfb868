"""Calls of the library's own answers to the exercises' questions, seen from every thread.

A check gives no points for an answer that only calls the library's answer to its question
(``checks.Check.library``), and its instant run in the student's kernel says so. Each such
library function carries ``@recorded``: while a check watches (``watching()``), every call of
it is noted, whatever thread makes it (a worker of a thread pool made in an earlier cell too,
a pool's callback) and whatever name it was called by (an alias, ``from ... import ... as``,
a nested function). Outside a check the note costs one look at an empty dict.

Why at the function itself: a profile or trace function (``sys.setprofile``,
``threading.setprofile``) sees only the thread that sets it and the threads started after it
(Python 3.11), so a pool whose workers were already running escaped it; the function itself
runs in whatever thread calls it.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

F = TypeVar("F", bound=Callable)

_records: dict[int, list[Callable]] = {}  # one list per watching block, by its id
_lock = threading.Lock()


def recorded(function: F) -> F:
    """``function``, noting each of its calls in every ``watching()`` block open at the time."""
    original = inspect.unwrap(function)

    @functools.wraps(function)
    def note_and_call(*args, **kwargs):
        if _records:
            with _lock:
                for record in _records.values():
                    record.append(original)
        return function(*args, **kwargs)

    return note_and_call  # type: ignore[return-value]


def is_recorded(function: Callable) -> bool:
    """Whether ``function`` (or a function it wraps) carries ``@recorded``."""
    while function is not None:
        if getattr(function, "__code__", None) is _NOTE:
            return True
        function = getattr(function, "__wrapped__", None)
    return False


_NOTE = recorded(lambda: None).__code__


@contextmanager
def watching() -> Iterator[list[Callable]]:
    """Inside the block, the list of the ``@recorded`` functions called so far, from any thread
    (each as the undecorated function, once per call)."""
    record: list[Callable] = []
    with _lock:
        _records[id(record)] = record
    try:
        yield record
    finally:
        with _lock:
            del _records[id(record)]
