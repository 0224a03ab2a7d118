"""The two hand-derived gradients of a convolution, as convolutions themselves.

With stride ``S``, dilation ``D``, low padding ``P`` and (per spatial axis) taps ``a``::

    Forward:  Y[n,o,i]   = sum_{c,a} X[n, c, S*i + D*a - P] W[o, c, a]        (cross-correlation)
    dL/dW:    dW[o,c,a]  = sum_{n,i} dY[n,o,i] X[n, c, S*i + D*a - P]
                         = correlate X with dY dilated by S, dilation acting as the stride
    dL/dX:    dX[n,c,q]  = sum_{(i,a): S*i + D*a - P = q} sum_o dY[n,o,i] W[o,c,a]
                         = correlate dY dilated by S with W flipped by 180 degrees
                           and its channel axes swapped

In words (the lecture's): every weight touches every output pixel, so ``dW`` sums over all
of them; an input pixel only sees the outputs whose window covered it, which is what
correlating the stride-dilated ``dY`` with the flipped kernel enumerates. Groups split the
channel axes into blocks that never mix; for ``dW`` the groups ride in the batch dimension
(``batch_group_count``), for ``dX`` they move into the kernel's output-feature axis.

Both functions are built from ``lax.conv_general_dilated``, ``lax.rev`` and reshapes, which
JAX differentiates in forward and reverse mode, so second derivatives of ``conv`` compose.
Low-precision inputs (bfloat16/float16) accumulate in float32 and are cast back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec
from jax.typing import ArrayLike

from .._checks import check_float_array, check_same_dtype, check_shape
from .._compat import explicit_mesh, sharding_of
from .._dtypes import accumulation_dtype
from .._shapes import vjp_lhs_padding, vjp_rhs_padding
from ._config import ConvConfig, conv_config, output_shape

__all__ = [
    "bias_grad",
    "conv_input_grad",
    "conv_weight_grad",
    "input_grad",
    "weight_grad",
    "weight_grad_sharding",
]


def _swap_io(spec: Sequence[int]) -> tuple[int, ...]:
    return (spec[1], spec[0]) + tuple(spec[2:])


def _split_axis(x: jax.Array, axis: int, parts: int) -> jax.Array:
    shape = list(x.shape)
    shape[axis : axis + 1] = [parts, shape[axis] // parts]
    return x.reshape(shape)


def _merge_axis_into(x: jax.Array, src: int, dst: int) -> jax.Array:
    """Fold axis ``src`` into axis ``dst`` (numbered after ``src`` is removed), ``src`` major."""
    moved = jnp.moveaxis(x, src, dst if dst < src else dst)
    shape = list(moved.shape)
    shape[dst : dst + 2] = [shape[dst] * shape[dst + 1]]
    return moved.reshape(shape)


def _kernel(w: jax.Array, cfg: ConvConfig) -> jax.Array:
    """The kernel actually correlated: reversed on every spatial axis when ``flip``."""
    return lax.rev(w, cfg.dimension_numbers.rhs_spec[2:]) if cfg.flip else w


def _cast(x: jax.Array, dtype: Any) -> jax.Array:
    return x if x.dtype == dtype else x.astype(dtype)


def _common_dtype(a: Any, b: Any) -> np.dtype:
    """The dtype a gradient convolution runs in when ``dy`` (a ``preferred_element_type``
    output) and the saved operand differ: the wider one; float16 and bfloat16 meet in
    float32. Written out because ``jnp.result_type`` refuses mixed floats under
    ``jax_numpy_dtype_promotion="strict"``."""
    a, b = np.dtype(a), np.dtype(b)
    if a == b:
        return a
    if a.itemsize != b.itemsize:
        return a if a.itemsize > b.itemsize else b
    return np.dtype(np.float32)


def _input_grad_sharding(
    dy: jax.Array, w: jax.Array, input_shape: Sequence[int], cfg: ConvConfig
) -> Any:
    """dX's sharding when the caller has not the primal's and an operand is sharded along an
    explicit mesh axis (where lax refuses to guess): ``dy``'s batch and spatial shardings
    carried over (each input pixel is computed where its output window lives), its channels
    replicated (dX sums over the output channels). ``None`` otherwise: lax's own rule."""
    mesh = explicit_mesh(dy, w)
    if mesh is None:
        return None
    lhs_spec, _, out_spec = cfg.dimension_numbers
    dy_sharding = sharding_of(dy)
    dy_parts = [None] * dy.ndim if dy_sharding is None else list(dy_sharding.spec)
    dy_parts += [None] * (dy.ndim - len(dy_parts))
    parts: list[Any] = [None] * len(input_shape)
    for d_in, d_out in zip(lhs_spec[2:], out_spec[2:], strict=True):
        names = dy_parts[d_out]
        ways = math.prod(mesh.shape[a] for a in _axes(names))
        parts[d_in] = names if input_shape[d_in] % ways == 0 else None
    if cfg.batch_group_count == 1:  # batch groups come back to the batch axis by a reshape
        parts[lhs_spec[0]] = dy_parts[out_spec[0]]
    return NamedSharding(mesh, PartitionSpec(*parts))


def weight_grad_sharding(x: jax.Array, dy: jax.Array, w: jax.Array | None = None) -> Any:
    """dW's ``out_sharding``: the kernel ``w``'s own when its type carries one (as lax's
    transpose rule gives it); else replicated when ``x`` or ``dy`` is sharded along an
    explicit mesh axis, where lax refuses to guess (dW sums over the batch and every output
    pixel, the axes a data- or spatially-parallel mesh splits, and a kernel whose type carries
    no sharding is replicated); else ``None``: lax's own rule."""
    own = None if w is None else sharding_of(w)
    if own is not None:
        return own
    mesh = explicit_mesh(x, dy)
    return None if mesh is None else NamedSharding(mesh, PartitionSpec())


def _axes(part: Any) -> tuple[Any, ...]:
    """The mesh axis names one PartitionSpec entry names."""
    if part is None:
        return ()
    return tuple(part) if isinstance(part, tuple) else (part,)


def _sharding_kwargs(out_sharding: Any) -> dict[str, Any]:
    # Passed only when there is one: lax's ``out_sharding`` argument is recent.
    return {} if out_sharding is None else {"out_sharding": out_sharding}


def input_grad(
    dy: jax.Array,
    w: jax.Array,
    input_shape: Sequence[int],
    cfg: ConvConfig,
    out_sharding: Any = None,
) -> jax.Array:
    """dL/dX: ``dy`` (stride-dilated) correlated with the spatially flipped, IO-swapped kernel.

    ``out_sharding``: the input's sharding under a mesh (lax's transpose rule passes the
    primal's); ``None`` derives it from ``dy`` and ``w`` where an explicit mesh needs it."""
    lhs_spec, rhs_spec, out_spec = cfg.dimension_numbers
    out_dtype = w.dtype  # x shares w's dtype (checked by every public wrapper)
    compute = _common_dtype(dy.dtype, w.dtype)
    if any(s == 0 for s in dy.shape):
        return jnp.zeros(input_shape, w.dtype)
    k = _kernel(w, cfg)
    groups, batch_groups = cfg.feature_group_count, cfg.batch_group_count
    if groups > 1 or batch_groups > 1:
        # Each group's block of output features becomes that group's input features.
        k = _split_axis(k, rhs_spec[0], max(groups, batch_groups))
        k = _merge_axis_into(k, rhs_spec[0], rhs_spec[1])
    pads = vjp_lhs_padding(
        [input_shape[d] for d in lhs_spec[2:]],
        [w.shape[d] for d in rhs_spec[2:]],
        cfg.window_strides,
        [dy.shape[d] for d in out_spec[2:]],
        cfg.padding,
        cfg.lhs_dilation,
        cfg.rhs_dilation,
    )
    dy_c, dilation = _cast(dy, compute), cfg.window_strides
    if np.dtype(compute).itemsize >= 8:
        dy_c, pads = _explicit_padding(dy_c, pads, dilation, out_spec)
        dilation = (1,) * len(dilation)
    dx = lax.conv_general_dilated(
        dy_c,
        _cast(lax.rev(k, rhs_spec[2:]), compute),
        window_strides=cfg.lhs_dilation,
        padding=pads,
        lhs_dilation=dilation,
        rhs_dilation=cfg.rhs_dilation,
        dimension_numbers=lax.ConvDimensionNumbers(out_spec, _swap_io(rhs_spec), lhs_spec),
        feature_group_count=max(groups, batch_groups),
        precision=cfg.precision,
        preferred_element_type=accumulation_dtype(compute),
        **_sharding_kwargs(
            _input_grad_sharding(dy, w, input_shape, cfg) if out_sharding is None else out_sharding
        ),
    )
    dx = _cast(dx, out_dtype)
    if batch_groups > 1:
        # Batch groups were stacked along features: move them back to the batch axis.
        dx = _split_axis(dx, lhs_spec[1], batch_groups)
        dx = _merge_axis_into(dx, lhs_spec[1], lhs_spec[0])
    return dx


def _explicit_padding(
    a: jax.Array, pads, dilation: Sequence[int], spec
) -> tuple[jax.Array, tuple[tuple[int, int], ...]]:
    """``a`` dilated and padded by one ``lax.pad`` (the positive part of the padding), the
    negative part left to the convolution, which then dilates nothing. For 64-bit dtypes
    only: XLA:CPU's algebraic simplifier aborts the process on some float64 dL/dX
    convolutions (measured: x (2, 6, 2, 6) channels-last, a 2x2 kernel, 3 groups, stride
    (2, 3), padding 1 -- and ``jax.grad`` of lax the same) and compiles them written out."""
    config = [(0, 0, 0)] * a.ndim
    rest = []
    for d, (lo, hi), s in zip(spec[2:], pads, dilation, strict=True):
        config[d] = (max(lo, 0), max(hi, 0), s - 1)
        rest.append((min(lo, 0), min(hi, 0)))
    return lax.pad(a, np.array(0, a.dtype), config), tuple(rest)


def weight_grad(
    x: jax.Array,
    dy: jax.Array,
    weight_shape: Sequence[int],
    cfg: ConvConfig,
    out_sharding: Any = None,
) -> jax.Array:
    """dL/dW: ``x`` correlated with ``dy`` (dilated by the stride), summed over the batch.

    ``out_sharding``: the kernel's sharding under a mesh; ``None`` derives it
    (:func:`weight_grad_sharding`) where an explicit mesh needs it: when the batch or the
    pixels, the axes this convolution contracts, are sharded."""
    lhs_spec, rhs_spec, out_spec = cfg.dimension_numbers
    out_dtype = x.dtype
    compute = _common_dtype(dy.dtype, x.dtype)
    if any(s == 0 for s in dy.shape):
        return jnp.zeros(weight_shape, x.dtype)
    groups, batch_groups = cfg.feature_group_count, cfg.batch_group_count
    feature_groups, batch_groups = (batch_groups, 1) if batch_groups > 1 else (1, groups)
    pads = vjp_rhs_padding(
        [x.shape[d] for d in lhs_spec[2:]],
        [weight_shape[d] for d in rhs_spec[2:]],
        cfg.window_strides,
        [dy.shape[d] for d in out_spec[2:]],
        cfg.padding,
        cfg.lhs_dilation,
        cfg.rhs_dilation,
    )
    # Batch plays the role of the contracted feature axis; dy is the "kernel".
    dims = lax.ConvDimensionNumbers(_swap_io(lhs_spec), _swap_io(out_spec), _swap_io(rhs_spec))
    dw = lax.conv_general_dilated(
        _cast(x, compute),
        _cast(dy, compute),
        window_strides=cfg.rhs_dilation,
        padding=pads,
        lhs_dilation=cfg.lhs_dilation,
        rhs_dilation=cfg.window_strides,
        dimension_numbers=dims,
        feature_group_count=feature_groups,
        batch_group_count=batch_groups,
        precision=cfg.precision,
        preferred_element_type=accumulation_dtype(compute),
        **_sharding_kwargs(weight_grad_sharding(x, dy) if out_sharding is None else out_sharding),
    )
    dw = _cast(dw, out_dtype)
    return lax.rev(dw, rhs_spec[2:]) if cfg.flip else dw


def bias_grad(dy: jax.Array, cfg: ConvConfig, dtype: Any) -> jax.Array:
    """dL/db: every output pixel of channel ``o`` adds ``b[o]``, so sum ``dy`` over the rest."""
    feature = cfg.dimension_numbers.out_spec[1]
    axes = tuple(d for d in range(dy.ndim) if d != feature)
    return jnp.sum(dy, axis=axes, dtype=accumulation_dtype(dy.dtype)).astype(dtype)


# ----------------------------------------------------------------------------------------
# Public faces: the two rules as functions (JAX twins of torch.nn.grad.conv*_input/weight).


def _float_operands(*named: tuple[str, Any]) -> list[jax.Array]:
    """Check the named operands are floating and share the first one's dtype; as arrays."""
    for name, a in named:
        check_float_array(a, name)
    check_same_dtype(list(named))
    return [jnp.asarray(a) for _, a in named]


def _grad_config(
    name_in: str,
    input_shape: Sequence[int],
    weight_shape: Sequence[int],
    dy_shape: Sequence[int],
    *,
    stride: Any,
    padding: Any,
    dilation: Any,
    groups: Any,
    flip: Any,
    channels_last: Any,
    precision: Any,
) -> ConvConfig:
    nd = len(weight_shape) - 2
    if nd < 1 or len(input_shape) != nd + 2 or len(dy_shape) != nd + 2:
        raise ValueError(
            f"`{name_in}`, `weight_shape` and `dy` must all have ndim = 2 + spatial rank "
            f"(>= 3), got {tuple(input_shape)}, {tuple(weight_shape)} and {tuple(dy_shape)}"
        )
    cfg, _ = conv_config(
        tuple(input_shape),
        tuple(weight_shape),
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        flip=flip,
        channels_last=channels_last,
        precision=precision,
        x_name=name_in,
        w_name="weight_shape",
    )
    expected = output_shape(tuple(input_shape), tuple(weight_shape), cfg)
    if tuple(dy_shape) != expected:
        raise ValueError(
            f"`dy` must have the convolution's output shape {expected} for these arguments, "
            f"got {tuple(dy_shape)}"
        )
    return cfg


def conv_input_grad(
    dy: ArrayLike,
    w: ArrayLike,
    input_shape: Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: Any = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    *,
    flip: bool = False,
    channels_last: bool = False,
    precision: Any = None,
) -> jax.Array:
    """dL/dX of :func:`jaxconv.conv`: ``dy`` correlated with the 180-degree-flipped kernel.

    ``dX[q] = sum over (i, a) with S*i + D*a - P = q of dY[i] W[a]`` (summed over output
    channels of the group): only the outputs whose window covered pixel ``q`` contribute.

    Args:
      dy: upstream gradient, ``(N, C_out, *spatial_out)`` (``(N, *spatial_out, C_out)`` if
        ``channels_last``).
      w: kernel, ``(C_out, C_in // groups, *kernel)`` (``(*kernel, C_in // groups, C_out)``).
      input_shape: the full shape of the convolution's input ``x`` (in the same layout).
      stride, padding, dilation, groups, flip, channels_last, precision: as in
        :func:`jaxconv.conv` (zero padding only).

    Returns:
      dL/dX with shape ``input_shape`` and ``w``'s dtype.

    Raises:
      TypeError, ValueError: as :func:`jaxconv.conv`, and when ``dy`` does not have the
        convolution's output shape.

    >>> import jax.numpy as jnp
    >>> conv_input_grad(jnp.ones((1, 1, 3)), jnp.array([[[1.0, 2.0, 3.0]]]), (1, 1, 5))
    Array([[[1., 3., 6., 5., 3.]]], dtype=float32)
    """
    w, dy = _float_operands(("w", w), ("dy", dy))
    input_shape = check_shape(input_shape, "input_shape")
    cfg = _grad_config(
        "input_shape",
        input_shape,
        w.shape,
        dy.shape,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        flip=flip,
        channels_last=channels_last,
        precision=precision,
    )
    return input_grad(dy, w, input_shape, cfg)


def conv_weight_grad(
    x: ArrayLike,
    dy: ArrayLike,
    weight_shape: Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: Any = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    *,
    flip: bool = False,
    channels_last: bool = False,
    precision: Any = None,
) -> jax.Array:
    """dL/dW of :func:`jaxconv.conv`: ``x`` correlated with ``dy`` (every weight sees every
    output pixel).

    ``dW[o, c, a] = sum_{n, i} dY[n, o, i] X[n, c, S*i + D*a - P]`` (reversed in ``a`` when
    ``flip``).

    Args:
      x: the convolution's input, ``(N, C_in, *spatial)`` (``(N, *spatial, C_in)``).
      dy: upstream gradient, ``(N, C_out, *spatial_out)`` (``(N, *spatial_out, C_out)``).
      weight_shape: the kernel's shape, ``(C_out, C_in // groups, *kernel)``
        (``(*kernel, C_in // groups, C_out)`` if ``channels_last``).
      stride, padding, dilation, groups, flip, channels_last, precision: as in
        :func:`jaxconv.conv` (zero padding only).

    Returns:
      dL/dW with shape ``weight_shape`` and ``x``'s dtype.

    Raises:
      TypeError, ValueError: as :func:`jaxconv.conv`, and when ``dy`` does not have the
        convolution's output shape.

    >>> import jax.numpy as jnp
    >>> x = jnp.arange(5.0).reshape(1, 1, 5)
    >>> conv_weight_grad(x, jnp.ones((1, 1, 3)), (1, 1, 3))   # sums of x[a : a + 3]
    Array([[[3., 6., 9.]]], dtype=float32)
    """
    x, dy = _float_operands(("x", x), ("dy", dy))
    weight_shape = check_shape(weight_shape, "weight_shape")
    cfg = _grad_config(
        "x",
        x.shape,
        weight_shape,
        dy.shape,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        flip=flip,
        channels_last=channels_last,
        precision=precision,
    )
    return weight_grad(x, dy, weight_shape, cfg)
