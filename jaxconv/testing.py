"""Testing utilities: Hypothesis strategies for valid convolution configurations, ``lax``
references, and :func:`assert_vjp_matches`. Our own tests use them; so can yours.

Requires ``hypothesis`` (``pip install "jaxconv[test]"``); ``import jaxconv`` does not.

Strategies draw dependent values in order — rank, kernel, dilation, stride, padding, an
input at least as large as the effective kernel, groups and channels, layout — and array
contents from a drawn PRNG seed, so examples are cheap and shrink to small configurations.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

try:
    from hypothesis import strategies as st
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError('jaxconv.testing needs hypothesis: pip install "jaxconv[test]"') from e

from ._compat import enable_x64 as enable_x64
from ._shapes import dilate_dim, padding_pairs
from ._verify.lax_reference import lax_avg_pool as lax_avg_pool
from ._verify.lax_reference import lax_conv as lax_conv
from ._verify.lax_reference import lax_max_pool as lax_max_pool
from ._verify.strategies import AdaptiveCase as AdaptiveCase
from ._verify.strategies import PoolCase as PoolCase
from ._verify.strategies import adaptive_pool_cases as adaptive_pool_cases
from ._verify.strategies import pool_array as pool_array
from ._verify.strategies import pool_cases as pool_cases
from ._verify.tolerances import relative_error as relative_error
from ._verify.tolerances import tolerance as tolerance

__all__ = [
    "AdaptiveCase",
    "ConvCase",
    "PoolCase",
    "adaptive_pool_cases",
    "lax_avg_pool",
    "lax_max_pool",
    "pool_array",
    "pool_cases",
    "assert_allclose_rel",
    "assert_vjp_matches",
    "conv_cases",
    "enable_x64",
    "lax_conv",
    "random_array",
    "relative_error",
    "tolerance",
]


@dataclasses.dataclass(frozen=True)
class ConvCase:
    """One drawn convolution: shapes, keyword arguments for :func:`jaxconv.conv`, a seed."""

    x_shape: tuple[int, ...]
    w_shape: tuple[int, ...]
    bias: bool
    kwargs: dict[str, Any]
    seed: int

    @property
    def channels_last(self) -> bool:
        return bool(self.kwargs.get("channels_last", False))

    def arrays(self, dtype: Any = np.float64) -> tuple[jax.Array, jax.Array, jax.Array | None]:
        """``(x, w, bias)`` drawn from ``self.seed`` (standard normal, cast to ``dtype``)."""
        rng = np.random.default_rng(self.seed)
        x = random_array(rng, self.x_shape, dtype)
        w = random_array(rng, self.w_shape, dtype)
        c_out = self.w_shape[-1] if self.channels_last else self.w_shape[0]
        b = random_array(rng, (c_out,), dtype) if self.bias else None
        return x, w, b


def random_array(
    rng: np.random.Generator, shape: Sequence[int], dtype: Any = np.float64
) -> jax.Array:
    """Standard-normal array of ``shape`` from ``rng``, as ``dtype``."""
    return jnp.asarray(rng.standard_normal(tuple(shape)), dtype=dtype)


@st.composite
def conv_cases(
    draw: st.DrawFn,
    *,
    ranks: Sequence[int] = (1, 2, 3),
    max_kernel: int = 3,
    max_stride: int = 3,
    max_dilation: int = 2,
    max_batch: int = 2,
    max_group_channels: int = 3,
    max_groups: int = 3,
    padding_modes: Sequence[str] = ("zeros",),
    allow_flip: bool = True,
    allow_channels_last: bool = True,
    allow_bias: bool = True,
    allow_strings: bool = True,
) -> ConvCase:
    """A valid :func:`jaxconv.conv` configuration (see :class:`ConvCase`)."""
    nd = draw(st.sampled_from(tuple(ranks)))
    kmax = max_kernel if nd < 3 else min(max_kernel, 2)
    kernel = tuple(draw(st.integers(1, kmax)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, max_dilation)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, max_stride)) for _ in range(nd))
    spans = [dilate_dim(k, d) for k, d in zip(kernel, dilation, strict=True)]
    mode = draw(st.sampled_from(tuple(padding_modes)))
    forms = ["int", "per_dim", "pairs"] + (
        ["VALID", "SAME", "SAME_LOWER", "FULL"] if allow_strings else []
    )
    form = draw(st.sampled_from(forms))
    if form == "int":
        padding: Any = draw(st.integers(0, max(spans) - 1 if max(spans) > 1 else 1))
        pads = [(padding, padding)] * nd
    elif form == "per_dim":
        padding = tuple(draw(st.integers(0, s)) for s in spans)
        pads = [(p, p) for p in padding]
    elif form == "pairs":
        padding = tuple((draw(st.integers(0, s)), draw(st.integers(0, s))) for s in spans)
        pads = list(padding)
    else:
        padding = form
        pads = [(s - 1, s - 1) for s in spans] if form == "FULL" else [(0, 0)] * nd
    # The input must hold the dilated kernel once padded (for SAME any size works; choose
    # sizes so that VALID would also fit, which keeps outputs non-trivial).
    spatial = []
    for k, (lo, hi) in enumerate(pads):
        low = 1 if form in ("SAME", "SAME_LOWER") else max(1, spans[k] - lo - hi)
        spatial.append(draw(st.integers(low, low + (4 if nd < 3 else 2))))
    if mode in ("reflect", "circular"):
        resolved = padding_pairs(padding, spatial, kernel, stride, dilation)
        spatial = [
            max(s, max(lo, hi) + (1 if mode == "reflect" else 0), 1)
            for s, (lo, hi) in zip(spatial, resolved, strict=True)
        ]
    groups = draw(st.integers(1, max_groups))
    c_in_g = draw(st.integers(1, max_group_channels))
    c_out_g = draw(st.integers(1, max_group_channels))
    batch = draw(st.integers(1, max_batch))
    channels_last = draw(st.booleans()) if allow_channels_last else False
    flip = draw(st.booleans()) if allow_flip else False
    bias = draw(st.booleans()) if allow_bias else False
    c_in, c_out = c_in_g * groups, c_out_g * groups
    if channels_last:
        x_shape = (batch, *spatial, c_in)
        w_shape = (*kernel, c_in_g, c_out)
    else:
        x_shape = (batch, c_in, *spatial)
        w_shape = (c_out, c_in_g, *kernel)
    kwargs = dict(
        stride=stride if draw(st.booleans()) or len(set(stride)) > 1 else stride[0],
        padding=padding,
        dilation=dilation,
        groups=groups,
        flip=flip,
        channels_last=channels_last,
        padding_mode=mode,
    )
    seed = draw(st.integers(0, 2**31 - 1))
    return ConvCase(tuple(x_shape), tuple(w_shape), bias, kwargs, seed)


def assert_allclose_rel(actual: Any, expected: Any, rtol: float, what: str = "") -> None:
    """Assert ``relative_error(actual, expected) <= rtol``; on failure the message names the
    worst element: its index and both values."""
    err = relative_error(actual, expected)
    if err <= rtol:
        return
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    diff = np.abs(a - e)
    diff = np.where(np.isnan(a) & np.isnan(e), 0.0, np.nan_to_num(diff, nan=np.inf))
    worst = np.unravel_index(int(np.argmax(diff)), a.shape) if a.size else ()
    index = tuple(int(i) for i in worst)
    raise AssertionError(
        f"{what}: relative error {err:.3g} > {rtol:.3g}; worst at index {index}: "
        f"got {float(a[worst]):.7g}, expected {float(e[worst]):.7g}"
    )


def assert_vjp_matches(
    f: Callable[..., Any],
    f_ref: Callable[..., Any],
    args: Sequence[Any],
    *,
    rtol: float | None = None,
    seed: int = 0,
    jit: bool = True,
    order: int = 1,
) -> None:
    """Assert ``f`` and ``f_ref`` agree on value and on the VJP for a random cotangent, and,
    with ``order=2``, on second derivatives too.

    Second order checks both compositions JAX users meet: reverse-over-reverse (the gradient
    of ``<vjp(ct), u>`` for a random direction ``u``) and forward-over-reverse (``jax.jvp`` of
    that VJP along ``u``, what ``jax.hessian`` does). ``None`` arguments are passed through and
    not differentiated. ``rtol`` defaults to the tolerance table's entry for the first
    argument's dtype. With ``jit=True`` each side's computation is one compiled function.

    Raises:
      AssertionError: a mismatch; the message names the quantity (value, VJP w.r.t. argument
        ``i``, second order), the worst element's index and both values.
      ValueError: ``order`` other than 1 or 2.

    >>> import jax, jax.numpy as jnp
    >>> x = jnp.linspace(-1.0, 1.0, 5)
    >>> assert_vjp_matches(jnp.sin, lambda x: jnp.cos(x - jnp.pi / 2), (x,), order=2)
    """
    if order not in (1, 2):
        raise ValueError(f"`order` must be 1 or 2, got {order!r}")
    idx = [i for i, a in enumerate(args) if a is not None]

    def bind(fn: Callable[..., Any]) -> Callable[..., Any]:
        def g(*diff: Any) -> Any:
            full = list(args)
            for i, a in zip(idx, diff, strict=True):
                full[i] = a
            return fn(*full)

        return g

    diff_args = [args[i] for i in idx]
    rtol = tolerance(diff_args[0].dtype) if rtol is None else rtol
    out = jax.eval_shape(bind(f), *diff_args)
    rng = np.random.default_rng(seed)
    ct = random_array(rng, out.shape, out.dtype)
    dirs = [random_array(rng, a.shape, a.dtype) for a in diff_args]

    def value_and_vjp(fn: Callable[..., Any]) -> Any:
        def run(ct: Any, *diff: Any) -> Any:
            y, vjp = jax.vjp(bind(fn), *diff)
            return y, vjp(ct)

        return (jax.jit(run) if jit else run)(ct, *diff_args)

    y, grads = value_and_vjp(f)
    y_ref, grads_ref = value_and_vjp(f_ref)
    assert y.shape == y_ref.shape, f"output shape {y.shape} != reference {y_ref.shape}"
    assert y.dtype == y_ref.dtype, f"output dtype {y.dtype} != reference {y_ref.dtype}"
    assert_allclose_rel(y, y_ref, rtol, "value")
    for k, (g, g_ref) in enumerate(zip(grads, grads_ref, strict=True)):
        assert g.shape == g_ref.shape and g.dtype == g_ref.dtype, f"argument {idx[k]}"
        assert_allclose_rel(g, g_ref, rtol, f"VJP w.r.t. argument {idx[k]}")
    if order == 1:
        return

    def second(fn: Callable[..., Any]) -> Any:
        def projected(*diff: Any) -> Any:  # <vjp(ct), u>: a scalar whose gradient is H u-ish
            _, vjp = jax.vjp(bind(fn), *diff)
            return sum(jnp.vdot(g, u) for g, u in zip(vjp(ct), dirs, strict=True)).real

        def run(*diff: Any) -> Any:
            rr = jax.grad(projected, argnums=tuple(range(len(diff))))(*diff)
            vjp_of = lambda *d: jax.vjp(bind(fn), *d)[1](ct)  # noqa: E731
            fr = jax.jvp(vjp_of, tuple(diff), tuple(dirs))[1]
            return rr, fr

        return (jax.jit(run) if jit else run)(*diff_args)

    for name, got, want in zip(
        ("reverse-over-reverse", "forward-over-reverse"), second(f), second(f_ref), strict=True
    ):
        for k, (g, g_ref) in enumerate(zip(got, want, strict=True)):
            assert_allclose_rel(g, g_ref, rtol, f"{name} w.r.t. argument {idx[k]}")
