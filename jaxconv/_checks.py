"""Argument checks shared by every public op: one helper per kind of check.

Every helper raises ``TypeError``/``ValueError`` naming the argument in backticks and
ending with what was received, so a bad call fails before anything is traced.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "check_choice",
    "check_float_array",
    "check_float_dtype",
    "check_shape",
    "check_int",
    "check_ndim",
    "check_same_dtype",
    "normalize_pairs",
    "normalize_tuple",
]


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, bool | np.bool_):
        raise TypeError(f"`{name}` must be an int or a sequence of ints, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"`{name}` must be an int or a sequence of ints, got {value!r}") from None


def check_int(value: Any, name: str, *, minimum: int | None = None) -> int:
    """Return ``value`` as a Python int, checking ``value >= minimum``."""
    out = _as_int(value, name)
    if minimum is not None and out < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value!r}")
    return out


def normalize_tuple(
    value: Any, n: int, name: str, *, minimum: int | None = None
) -> tuple[int, ...]:
    """Expand an int, or check a length-``n`` sequence of ints, into an ``n``-tuple.

    Raises:
      TypeError: an element is not an integer.
      ValueError: the sequence has the wrong length or an element is below ``minimum``.
    """
    if isinstance(value, Iterable) and not isinstance(value, str | bytes):
        items = tuple(value)
        if len(items) != n:
            raise ValueError(
                f"`{name}` must be an int or a sequence of {n} ints (one per spatial "
                f"dimension), got {value!r}"
            )
        out = tuple(_as_int(v, name) for v in items)
    else:
        out = (_as_int(value, name),) * n
    if minimum is not None and any(v < minimum for v in out):
        raise ValueError(f"`{name}` must be >= {minimum} in every dimension, got {value!r}")
    return out


def normalize_pairs(value: Any, n: int, name: str) -> tuple[tuple[int, int], ...]:
    """``n`` non-negative ``(low, high)`` pairs from an int, ``n`` ints or ``n`` pairs."""
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        items = tuple(value)
        if len(items) != n:
            raise ValueError(
                f"`{name}` must be an int, {n} ints, or {n} (low, high) pairs (one per "
                f"spatial dimension), got {value!r}"
            )
        pairs = []
        for item in items:
            if isinstance(item, Sequence) and not isinstance(item, str | bytes):
                if len(item) != 2:
                    raise ValueError(
                        f"`{name}` pairs must be (low, high), got {item!r} in {value!r}"
                    )
                pairs.append((_as_int(item[0], name), _as_int(item[1], name)))
            else:
                v = _as_int(item, name)
                pairs.append((v, v))
    else:
        v = _as_int(value, name)
        pairs = [(v, v)] * n
    if any(lo < 0 or hi < 0 for lo, hi in pairs):
        raise ValueError(f"`{name}` must be >= 0 in every dimension, got {value!r}")
    return tuple(pairs)


def check_choice(value: Any, name: str, choices: Sequence[Any]) -> Any:
    """Check that ``value`` is one of ``choices``."""
    if not isinstance(value, str | int | type(None)) or value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"`{name}` must be one of {allowed}, got {value!r}")
    return value


def _dtype_of(x: Any, name: str) -> np.dtype:
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        raise TypeError(f"`{name}` must be an array, got {type(x).__name__}")
    return np.dtype(dtype)


def check_float_array(x: Any, name: str) -> np.dtype:
    """Check ``x`` is an array of a real floating dtype (float16/bfloat16/32/64)."""
    dtype = _dtype_of(x, name)
    if not np.issubdtype(dtype, np.floating) and dtype.name != "bfloat16":
        raise TypeError(
            f"`{name}` must have a floating dtype (bfloat16, float16, float32 or "
            f"float64), got {dtype.name}"
        )
    return dtype


def check_same_dtype(names_and_arrays: Sequence[tuple[str, Any]]) -> None:
    """Check every array shares the first one's dtype (no silent promotion)."""
    (first_name, first), *rest = names_and_arrays
    d0 = np.dtype(first.dtype)
    for name, arr in rest:
        if np.dtype(arr.dtype) != d0:
            raise TypeError(
                f"`{name}` must have the same dtype as `{first_name}` ({d0.name}), "
                f"got {np.dtype(arr.dtype).name}"
            )


def check_ndim(x: Any, name: str, ndim: int | Sequence[int], layout: str) -> None:
    """Check ``x.ndim`` is ``ndim`` (or one of them); ``layout`` names the expected axes."""
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if np.ndim(x) not in allowed:
        raise ValueError(
            f"`{name}` must be {layout} with ndim {' or '.join(map(str, allowed))}, "
            f"got shape {tuple(np.shape(x))}"
        )


def check_bool(value: Any, name: str) -> bool:
    """Check that ``value`` is a Python or NumPy bool."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"`{name}` must be a bool, got {value!r}")
    return bool(value)


def check_at_most(
    values: Sequence[int], limits: Sequence[int], name: str, rule: str, received: str
) -> None:
    """Check ``values[i] <= limits[i]`` everywhere; ``rule`` states the bound in words."""
    if any(v > lim for v, lim in zip(values, limits, strict=True)):
        raise ValueError(f"`{name}` must be {rule} in every dimension, got {received}")


def check_shape(value: Any, name: str) -> tuple[int, ...]:
    """A shape: a sequence (or 1-D integer array) of non-negative ints, as a tuple."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable) or np.ndim(value) != 1:
        raise TypeError(f"`{name}` must be a sequence of non-negative ints, got {value!r}")
    items = tuple(value)
    if any(isinstance(v, bool | np.bool_) for v in items):
        raise TypeError(f"`{name}` must be a sequence of non-negative ints, got {value!r}")
    try:
        out = tuple(operator.index(v) for v in items)
    except TypeError:
        raise TypeError(
            f"`{name}` must be a sequence of non-negative ints, got {value!r}"
        ) from None
    if any(v < 0 for v in out):
        raise ValueError(f"`{name}` must be a sequence of non-negative ints, got {value!r}")
    return out


def check_float_dtype(dtype: Any, name: str) -> np.dtype:
    """A real floating dtype (float16/bfloat16/32/64), from anything ``np.dtype`` reads."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"`{name}` must be a floating dtype, got {dtype!r}") from None
    if not (np.issubdtype(dt, np.floating) or dt.name == "bfloat16"):
        raise TypeError(f"`{name}` must be a floating dtype, got {dt.name}")
    return dt
