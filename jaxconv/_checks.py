"""Argument checks shared by every public op: one helper per kind of check.

Every helper raises ``TypeError``/``ValueError`` naming the argument in backticks and
ending with what was received, so a bad call fails before anything is traced.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from typing import Any

import jax
import numpy as np

__all__ = [
    "check_choice",
    "check_float_array",
    "check_float_dtype",
    "check_int_array",
    "check_numeric_array",
    "check_shape",
    "check_int",
    "check_ndim",
    "check_same_dtype",
    "check_static",
    "normalize_pairs",
    "normalize_tuple",
]


def _plain(value: Any, name: str, what: str = "Python ints", shown: Any = None) -> Any:
    """NumPy (and concrete JAX) integer arrays and scalars as plain Python ints and lists,
    so every helper below accepts ``np.array([1, 1])`` wherever it accepts ``[1, 1]``.

    A traced value cannot be a static argument: that gets its own message, naming ``what``
    is expected and showing ``shown`` (default: ``value``), the argument as passed.
    """
    if isinstance(value, jax.Array):
        try:
            value = np.asarray(value)
        except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
            raise TypeError(
                f"`{name}` must be static ({what}, not a traced array: under jax.jit "
                f"mark it with static_argnums/static_argnames), "
                f"got {value if shown is None else shown!r}"
            ) from None
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()  # floats stay floats and bools stay bools: refused below
    return value


def _as_int(value: Any, name: str) -> int:
    value = _plain(value, name)
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
    shown, value = value, _plain(value, name)
    if isinstance(value, Iterable) and not isinstance(value, str | bytes):
        items = tuple(value)
        if len(items) != n:
            raise ValueError(
                f"`{name}` must be an int or a sequence of {n} ints (one per spatial "
                f"dimension), got {shown!r}"
            )
        out = tuple(_as_int(v, name) for v in items)
    else:
        out = (_as_int(value, name),) * n
    if minimum is not None and any(v < minimum for v in out):
        raise ValueError(f"`{name}` must be >= {minimum} in every dimension, got {shown!r}")
    return out


def normalize_pairs(value: Any, n: int, name: str) -> tuple[tuple[int, int], ...]:
    """``n`` non-negative ``(low, high)`` pairs from an int, ``n`` ints or ``n`` pairs (NumPy
    integer arrays of shape ``()``, ``(n,)`` or ``(n, 2)`` included)."""
    shown, value = value, _plain(value, name)
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        items = tuple(value)
        if len(items) != n:
            raise ValueError(
                f"`{name}` must be an int, {n} ints, or {n} (low, high) pairs (one per "
                f"spatial dimension), got {shown!r}"
            )
        pairs = []
        for item in items:
            item = _plain(item, name)
            if isinstance(item, Sequence) and not isinstance(item, str | bytes):
                if len(item) != 2:
                    raise ValueError(
                        f"`{name}` pairs must be (low, high), got {item!r} in {shown!r}"
                    )
                pairs.append((_as_int(item[0], name), _as_int(item[1], name)))
            else:
                v = _as_int(item, name)
                pairs.append((v, v))
    else:
        v = _as_int(value, name)
        pairs = [(v, v)] * n
    if any(lo < 0 or hi < 0 for lo, hi in pairs):
        raise ValueError(f"`{name}` must be >= 0 in every dimension, got {shown!r}")
    return tuple(pairs)


def check_choice(value: Any, name: str, choices: Sequence[Any]) -> Any:
    """Check that ``value`` is one of ``choices``."""
    if not isinstance(value, str | int | type(None)) or value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"`{name}` must be one of {allowed}, got {value!r}")
    return value


def _type_name(x: Any) -> str:
    """``torch.Tensor``, ``list``: what a message says was received."""
    t = type(x)
    module = t.__module__.split(".")[0]
    return t.__name__ if module == "builtins" else f"{module}.{t.__name__}"


def _dtype_of(x: Any, name: str) -> np.dtype:
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        raise TypeError(f"`{name}` must be an array, got {_type_name(x)}")
    try:
        return np.dtype(dtype)
    except TypeError:  # e.g. a torch tensor: its dtype is not a NumPy dtype
        raise TypeError(
            f"`{name}` must be a JAX or NumPy array, got {_type_name(x)} with dtype {dtype}"
        ) from None


def check_float_array(x: Any, name: str) -> np.dtype:
    """Check ``x`` is an array of a real floating dtype (float16/bfloat16/32/64)."""
    dtype = _dtype_of(x, name)
    if not np.issubdtype(dtype, np.floating) and dtype.name != "bfloat16":
        raise TypeError(
            f"`{name}` must have a floating dtype (bfloat16, float16, float32 or "
            f"float64), got {dtype.name}"
        )
    return dtype


def check_numeric_array(x: Any, name: str) -> np.dtype:
    """Check ``x`` is an array of a bool, integer, floating or complex dtype (what ``lax``
    convolves)."""
    dtype = _dtype_of(x, name)
    if not any(jax.dtypes.issubdtype(dtype, k) for k in (np.bool_, np.number)):
        raise TypeError(
            f"`{name}` must have a bool, integer, floating or complex dtype, got {dtype.name}"
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


def check_shape(value: Any, name: str, *, minimum: int = 0) -> tuple[int, ...]:
    """A shape: a sequence (or 1-D integer array) of ints ``>= minimum``, as a tuple.

    Raises:
      TypeError: not a sequence (an int, ``None``, a string), or an element is not an int.
      ValueError: an element is below ``minimum``.
    """
    what = "non-negative ints" if minimum == 0 else f"ints >= {minimum}"
    items = _plain(value, name)
    if isinstance(items, str | bytes) or not isinstance(items, Iterable):
        raise TypeError(f"`{name}` must be a sequence of {what}, got {value!r}")
    items = tuple(items)
    if any(isinstance(v, bool | np.bool_) for v in items):
        raise TypeError(f"`{name}` must be a sequence of {what}, got {value!r}")
    try:
        out = tuple(operator.index(v) for v in items)
    except TypeError:
        raise TypeError(f"`{name}` must be a sequence of {what}, got {value!r}") from None
    if any(v < minimum for v in out):
        raise ValueError(f"`{name}` must be a sequence of {what}, got {value!r}")
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


def check_static(value: Any, name: str, what: str = "Python ints") -> Any:
    """A static argument as plain Python values: NumPy (and concrete JAX) arrays and scalars,
    alone or as items of a list or tuple, become ints, floats, bools or lists (``tolist``),
    so the checks that follow see ``np.array([2, 2])`` as ``[2, 2]``.

    ``what`` names the values expected (``"Python ints"``, ``"a Python bool"``).

    Raises:
      TypeError: ``value`` is or holds a traced array: under ``jax.jit`` a static argument
        must be marked with ``static_argnums``/``static_argnames``.
    """

    def plain(v: Any) -> Any:
        return _plain(v, name, what, shown=value)

    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    return plain(value)


def check_int_array(x: Any, name: str) -> np.dtype:
    """Check ``x`` is a JAX or NumPy array of an integer dtype (indices, say)."""
    if getattr(x, "dtype", None) is None:
        raise TypeError(f"`{name}` must be an integer array (JAX or NumPy), got {_type_name(x)}")
    dtype = _dtype_of(x, name)
    if not np.issubdtype(dtype, np.integer):
        raise TypeError(f"`{name}` must be an integer array, got a {dtype.name} array")
    return dtype
