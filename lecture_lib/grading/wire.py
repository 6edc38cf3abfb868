"""What crosses from a student's kernel to the grader: plain data as JSON, arrays base64-encoded.

The kernel sends what a check's ``run`` half observed as one display message of the MIME type
``MIME``; the grader reads it back with ``decode``, which builds nothing but dicts, lists,
numbers, strings and numeric numpy arrays (no pickle, no code), and refuses anything larger
than it is told to accept or nested deeper than ``MAX_DEPTH`` (JSON's own parser refuses
a deeper nest with a ``RecursionError``, read here as unreadable).
"""

from __future__ import annotations

import base64
import json

import numpy as np

MIME = "application/vnd.lecture-lib.observed+json"
"""The MIME type of the messages that carry a check's observations out of the kernel."""

MAX_DEPTH = 40
"""Dicts and lists nested deeper than this are refused (what the checks send is far flatter)."""

MAX_ARRAY_BYTES = 256 * 2**20
"""An array may not claim more than this (its shape is checked before anything is built)."""

ARRAY_KINDS = "biuf"
"""numpy dtype kinds that may cross: bool, signed and unsigned integers, floating point."""


def encode(value) -> str:
    """``value`` (dicts with str keys, lists, tuples, numbers, strings, None, numpy arrays) as JSON."""
    return json.dumps(_plain(value), allow_nan=True)


def _plain(value):
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in ARRAY_KINDS:
            value = np.asarray(value, dtype=float)
        array = np.ascontiguousarray(value)
        return {
            "__array__": base64.b64encode(array.tobytes()).decode("ascii"),
            "dtype": array.dtype.str,
            "shape": list(array.shape),
        }
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return {"repr": repr(value)[:200]}


def decode(text: str, max_bytes: int = 64 * 2**20):
    """The data ``encode`` wrote; ``ValueError`` for anything else or anything too large."""
    if not isinstance(text, str) or len(text) > max_bytes:
        raise ValueError(f"observations are not text of at most {max_bytes} bytes")
    try:
        return _rebuild(json.loads(text))
    except (ValueError, TypeError, KeyError, OverflowError, RecursionError, MemoryError) as error:
        raise ValueError(
            f"unreadable observations ({type(error).__name__}: {error})"[:500]
        ) from None


def _rebuild(value, depth: int = 0):
    if depth > MAX_DEPTH:
        raise ValueError(f"observations nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        if "__array__" in value:
            dtype = np.dtype(str(value["dtype"]))
            if dtype.kind not in ARRAY_KINDS or dtype.hasobject or dtype.fields:
                raise ValueError(f"arrays of dtype {dtype} are not accepted")
            shape = tuple(int(n) for n in value["shape"])
            if any(n < 0 for n in shape) or len(shape) > 32:
                raise ValueError("an array's shape is not a shape")
            size = dtype.itemsize * int(np.prod(shape, dtype=object))
            if size > MAX_ARRAY_BYTES:
                raise ValueError("an array larger than the grader accepts")
            data = base64.b64decode(str(value["__array__"]), validate=True)
            if len(data) != size:
                raise ValueError("an array's data does not fit its shape")
            return np.frombuffer(data, dtype=dtype).reshape(shape).copy()
        return {str(key): _rebuild(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [_rebuild(item, depth + 1) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(f"unexpected value of type {type(value).__name__}")
