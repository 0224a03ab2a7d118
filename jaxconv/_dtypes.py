"""The one dtype policy of the package: what a computation accumulates and computes in.

Half precision (bfloat16, float16) accumulates in float32 -- the convolutions' gradients, the
pools' sums and the fast methods alike -- and is cast back to the input's dtype at the end;
float32 and float64 accumulate in themselves.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

__all__ = ["accumulation_dtype", "compute_dtype"]


def accumulation_dtype(dtype: DTypeLike) -> np.dtype | None:
    """float32 for half-precision ``dtype``; ``None`` (accumulate in ``dtype`` itself) otherwise.

    ``None`` is what ``lax``'s ``preferred_element_type`` and ``jnp.sum(dtype=...)`` take to
    mean "the operands' own dtype".
    """
    return np.dtype(np.float32) if np.dtype(dtype).itemsize < 4 else None


def compute_dtype(dtype: DTypeLike) -> np.dtype:
    """The dtype a computation runs in: ``dtype`` widened to at least float32."""
    return accumulation_dtype(dtype) or np.dtype(dtype)
