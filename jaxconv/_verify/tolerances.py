"""One per-dtype tolerance table, used by the tests and by ``jaxconv verify``.

Relative error is ``max|a - b| / max(max|b|, tiny)``: for sums of products (what a
convolution and its gradients are), that scale-free measure is what rounding bounds.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

__all__ = ["TOLERANCE", "relative_error", "tolerance"]

TOLERANCE: dict[str, float] = {
    "float64": 1e-10,
    "float32": 2e-3,
    "float16": 2e-2,
    "bfloat16": 1e-1,
}


def tolerance(dtype: DTypeLike) -> float:
    """Relative tolerance for results computed in ``dtype``."""
    return TOLERANCE[np.dtype(dtype).name]


def relative_error(actual: object, expected: object) -> float:
    """``max|actual - expected| / max|expected|`` in float64 (0 for two empty arrays)."""
    a = np.asarray(actual, dtype=np.float64)
    b = np.asarray(expected, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    both_nan = np.isnan(a) & np.isnan(b)
    diff = np.where(both_nan, 0.0, np.abs(a - b))
    same_inf = np.isinf(a) & np.isinf(b) & (np.sign(a) == np.sign(b))
    diff = np.where(same_inf, 0.0, diff)
    finite_b = np.abs(np.where(np.isfinite(b), b, 0.0))
    scale = max(float(finite_b.max()), np.finfo(np.float64).tiny)
    err = float(np.nan_to_num(diff, nan=np.inf).max()) / scale
    return err
