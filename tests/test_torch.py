"""PyTorch as a second oracle, for every op (skipped when torch is absent).

Convolution: conv (every padding mode, groups, strings), conv_transpose, and the public
gradient functions against ``torch.nn.grad``. Pooling: values, gradients, indices,
``ceil_mode``, divisors and layouts of every pool, on a fixed list of configurations (one jit
compile each keeps this fast; the Hypothesis properties in ``test_pool.py`` cover the space
against lax and the loops). Public API only.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jaxconv
from jaxconv import (
    adaptive_avg_pool,
    adaptive_max_pool,
    avg_pool,
    lp_pool,
    max_pool,
    max_unpool,
)
from jaxconv.testing import ConvCase, conv_cases, enable_x64, pool_array

torch = pytest.importorskip("torch")
F = torch.nn.functional

# ============================================================================ convolution


def _torch_conv(x, w, b, *, stride, padding, dilation, groups, padding_mode, flip):
    nd = w.ndim - 2
    pad = jaxconv.padding_pairs(padding, x.shape[2:], w.shape[2:], stride, dilation)
    if padding_mode != "zeros":
        flat = [p for lo_hi in reversed(pad) for p in lo_hi]
        x = F.pad(x, flat, mode=padding_mode)
    else:
        flat = [p for lo_hi in reversed(pad) for p in lo_hi]
        x = F.pad(x, flat)
    if flip:
        w = torch.flip(w, dims=tuple(range(2, 2 + nd)))
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
    return fn(x, w, b, stride=stride, dilation=dilation, groups=groups)


@given(
    conv_cases(
        padding_modes=("zeros", "reflect", "replicate", "circular"), allow_channels_last=False
    )
)
def test_conv_and_grads_match_torch(case: ConvCase):
    with enable_x64():
        x, w, b = case.arrays(np.float64)
        y, vjp = jax.vjp(lambda x, w, b: jaxconv.conv(x, w, b, **case.kwargs), x, w, b)
        kw = {k: v for k, v in case.kwargs.items() if k != "channels_last"}
        tx, tw = (torch.tensor(np.asarray(a), requires_grad=True) for a in (x, w))
        tb = None if b is None else torch.tensor(np.asarray(b), requires_grad=True)
        ty = _torch_conv(tx, tw, tb, **kw)
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-10)
        dy = np.random.default_rng(case.seed).standard_normal(y.shape)
        ty.backward(torch.tensor(dy))
        dx, dw, db = vjp(jax.numpy.asarray(dy))
        np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(dw, tw.grad.numpy(), rtol=1e-10, atol=1e-10)
        if b is not None:
            np.testing.assert_allclose(db, tb.grad.numpy(), rtol=1e-10, atol=1e-10)


@given(
    nd=st.integers(1, 3),
    stride=st.integers(1, 3),
    dilation=st.integers(1, 2),
    kernel=st.integers(1, 3),
    pad=st.integers(0, 2),
    groups=st.integers(1, 2),
    extra=st.integers(0, 2),
    seed=st.integers(0, 2**31 - 1),
)
def test_conv_transpose_matches_torch(nd, stride, dilation, kernel, pad, groups, extra, seed):
    op = min(extra, max(stride, dilation) - 1)
    size = 3 if nd == 3 else 5
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 2 * groups) + (size,) * nd)
    w = rng.standard_normal((2 * groups, 3) + (kernel,) * nd)
    b = rng.standard_normal(3 * groups)
    out = (size - 1) * stride - 2 * pad + dilation * (kernel - 1) + op + 1
    if out < 1:
        return
    fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[nd]
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = fn(tx, tw, tb, stride, pad, op, groups, dilation)
    dy = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(dy))
    with enable_x64():
        y, vjp = jax.vjp(
            lambda x, w, b: jaxconv.conv_transpose(x, w, b, stride, pad, op, groups, dilation),
            *(jax.numpy.asarray(a) for a in (x, w, b)),
        )
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-10)
        for ours, t in zip(vjp(jax.numpy.asarray(dy)), (tx, tw, tb), strict=True):
            np.testing.assert_allclose(ours, t.grad.numpy(), rtol=1e-10, atol=1e-10)


def test_gradient_functions_match_torch_nn_grad():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 4, 9, 8)), rng.standard_normal((6, 2, 3, 2))
    kw = dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2)
    y = F.conv2d(torch.tensor(x), torch.tensor(w), **kw)
    dy = rng.standard_normal(tuple(y.shape))
    tdx = torch.nn.grad.conv2d_input(x.shape, torch.tensor(w), torch.tensor(dy), **kw)
    tdw = torch.nn.grad.conv2d_weight(torch.tensor(x), w.shape, torch.tensor(dy), **kw)
    with enable_x64():
        dx = jaxconv.conv_input_grad(jax.numpy.asarray(dy), jax.numpy.asarray(w), x.shape, **kw)
        dw = jaxconv.conv_weight_grad(jax.numpy.asarray(x), jax.numpy.asarray(dy), w.shape, **kw)
    np.testing.assert_allclose(dx, tdx.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dw, tdw.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
def test_same_padding_matches_torch_for_stride_one():
    """PyTorch's padding='same' (stride 1) puts the odd extra cell high, like XLA's SAME."""
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((1, 2, 7, 6)), rng.standard_normal((3, 2, 4, 3))
    ty = F.conv2d(torch.tensor(x), torch.tensor(w), padding="same", dilation=(1, 2))
    with enable_x64():
        y = jaxconv.conv(
            jax.numpy.asarray(x), jax.numpy.asarray(w), padding="SAME", dilation=(1, 2)
        )
    np.testing.assert_allclose(y, ty.numpy(), rtol=1e-10, atol=1e-10)


# ================================================================================ pooling


def _torch_op(name, rank):
    return getattr(F, f"{name}{rank}d")


def _vjp(f, x, dy):
    def both(a, d):
        y, pullback = jax.vjp(f, a)
        return y, pullback(d)[0]

    return jax.jit(both)(x, dy)


def _torch_vjp(f, x, dy):
    t = torch.tensor(np.asarray(x), requires_grad=True)
    out = f(t)
    y = out[0] if isinstance(out, tuple) else out
    (g,) = torch.autograd.grad(y, t, torch.tensor(np.asarray(dy)))
    return out, g.numpy()


def _to_cl(a):
    return np.moveaxis(np.asarray(a), 1, -1)


def _inputs(shape, values, seed=0):
    rng = np.random.default_rng(seed)
    with enable_x64():
        x = np.asarray(pool_array(rng, shape, np.float64, values))
    return x


def _compare(ours_cf, theirs, x, channels_last, with_indices=False):
    """Run ours (channels-first or -last) and torch (channels-first) in float64."""
    with enable_x64():
        out_t = theirs(torch.tensor(x))
        y_t = out_t[0] if with_indices else out_t
        dy = np.random.default_rng(1).standard_normal(tuple(y_t.shape))
        _, g_t = _torch_vjp(theirs, x, dy)
        xin, dyin = (x, dy) if not channels_last else (_to_cl(x), _to_cl(dy))
        f = (lambda a: ours_cf(a)[0]) if with_indices else ours_cf
        y, g = _vjp(f, jnp.asarray(xin), jnp.asarray(dyin))
        if channels_last:
            y, g = np.moveaxis(np.asarray(y), -1, 1), np.moveaxis(np.asarray(g), -1, 1)
        np.testing.assert_allclose(np.asarray(y), y_t.detach().numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(np.asarray(g), g_t, rtol=1e-12, atol=1e-12)
        if with_indices:
            idx = np.asarray(jax.jit(ours_cf)(jnp.asarray(xin))[1])
            idx = np.moveaxis(idx, -1, 1) if channels_last else idx
            np.testing.assert_array_equal(idx, out_t[1].numpy())


MAX_CASES = [
    # (input shape, window, stride, padding, dilation, ceil_mode, channels_last, values)
    ((2, 3, 9, 11), 2, 2, 0, 1, False, False, "normal"),
    ((2, 3, 9, 11), 3, 2, 1, 1, True, True, "normal"),
    ((2, 3, 10, 9), 3, 1, 1, 2, False, False, "ties"),
    ((2, 3, 9, 9), (3, 2), (2, 3), (1, 0), (2, 1), True, False, "ties"),
    ((2, 2, 11), 3, 2, 1, 3, True, True, "special"),
    ((1, 2, 5, 6, 7), 2, (1, 2, 2), 1, 1, True, False, "ties"),
    ((1, 2, 6, 5, 4), 3, 2, 1, (1, 1, 2), False, True, "special"),
]


@pytest.mark.parametrize("shape, k, s, p, d, ceil_mode, channels_last, values", MAX_CASES)
def test_max_pool_matches_torch(shape, k, s, p, d, ceil_mode, channels_last, values):
    x = _inputs(shape, values)
    rank = len(shape) - 2

    def ours(a):
        return max_pool(a, k, s, p, d, ceil_mode, channels_last=channels_last, return_indices=True)

    def theirs(t):
        return _torch_op("max_pool", rank)(t, k, s, p, d, ceil_mode, return_indices=True)

    _compare(ours, theirs, x, channels_last, with_indices=True)


AVG_CASES = [
    # (input shape, window, stride, padding, ceil_mode, count_include_pad, divisor, layout)
    ((2, 3, 9, 11), 2, 2, 0, False, True, None, False),
    ((2, 3, 9, 11), 3, 2, 1, True, True, None, True),
    ((2, 3, 9, 11), 3, 2, 1, True, False, None, False),
    ((2, 3, 8, 7), (3, 2), (1, 2), (1, 1), False, False, 5, True),
    ((2, 2, 13), 4, 3, 2, True, True, None, False),
    ((1, 2, 5, 6, 7), 3, 2, 1, True, False, None, False),
    ((1, 2, 5, 6, 7), 2, 2, 1, True, True, 3, True),
]


@pytest.mark.parametrize("shape, k, s, p, ceil_mode, cip, div, channels_last", AVG_CASES)
def test_avg_pool_matches_torch(shape, k, s, p, ceil_mode, cip, div, channels_last):
    x = _inputs(shape, "normal")
    rank = len(shape) - 2

    def ours(a):
        return avg_pool(a, k, s, p, ceil_mode, cip, div, channels_last=channels_last)

    def theirs(t):
        if rank == 1:  # avg_pool1d has no divisor_override
            assert div is None
            return F.avg_pool1d(t, k, s, p, ceil_mode, cip)
        return _torch_op("avg_pool", rank)(t, k, s, p, ceil_mode, cip, div)

    _compare(ours, theirs, x, channels_last)


LP_CASES = [
    ((2, 3, 9, 11), 2.0, 2, None, False, False),
    ((2, 3, 9, 11), 3.0, 3, 2, True, True),
    ((2, 3, 9, 11), 1.5, (2, 3), (1, 2), True, False),
    ((2, 2, 13), 1.0, 4, 3, True, False),
    ((1, 2, 5, 6, 7), 2.5, 2, 2, True, True),
    ((2, 3, 9, 11), math.inf, 3, 2, True, False),
    ((2, 3, 9, 11), -math.inf, 2, 2, False, True),
]


def _torch_has_lp_inf() -> bool:
    """PyTorch >= 2.13 maps p = +-inf to max pools of |x|; older versions compute x^inf."""
    y = F.lp_pool1d(torch.tensor([[[2.0, -3.0]]]), math.inf, 2)
    return bool(y.item() == 3.0)


@pytest.mark.parametrize("shape, p, k, s, ceil_mode, channels_last", LP_CASES)
def test_lp_pool_matches_torch(shape, p, k, s, ceil_mode, channels_last):
    if math.isinf(p) and not _torch_has_lp_inf():
        pytest.skip(f"torch {torch.__version__} has no p=inf special case in lp_pool")
    x = np.abs(_inputs(shape, "normal")) + 0.05  # real powers for every p
    rank = len(shape) - 2

    def ours(a):
        return lp_pool(a, p, k, s, ceil_mode, channels_last=channels_last)

    def theirs(t):
        return _torch_op("lp_pool", rank)(t, p, k, s, ceil_mode)

    _compare(ours, theirs, x, channels_last)


def test_lp_pool_sign_behaviour_matches_torch():
    # negative sums: odd p gives NaN (pow of a negative base), p = 1 keeps the sign
    x = np.asarray([[[-1.0, -2.0, 3.0, 0.5, -1.0, 0.0, 0.0]]])
    for p in (1.0, 2.0, 3.0):
        y = np.asarray(lp_pool(jnp.asarray(x, jnp.float32), p, 2, ceil_mode=True))
        expected = F.lp_pool1d(torch.tensor(x, dtype=torch.float32), p, 2, ceil_mode=True)
        np.testing.assert_allclose(y, expected.numpy(), rtol=1e-6)
        g = jax.grad(lambda a, p=p: jnp.sum(lp_pool(a, p, 2, ceil_mode=True)))(
            jnp.asarray(x, jnp.float32)
        )
        t = torch.tensor(x, dtype=torch.float32, requires_grad=True)
        F.lp_pool1d(t, p, 2, ceil_mode=True).sum().backward()
        finite = np.isfinite(t.grad.numpy())  # finite wherever PyTorch's is
        np.testing.assert_allclose(np.asarray(g)[finite], t.grad.numpy()[finite], rtol=1e-6)
        assert np.all(np.isfinite(np.asarray(g)[finite]))


ADAPTIVE_CASES = [
    ((2, 3, 9, 11), (4, 5), False, "normal"),
    ((2, 3, 9, 11), 1, True, "ties"),
    ((2, 3, 5, 7), (7, None), False, "special"),
    ((2, 2, 13), 4, True, "normal"),
    ((1, 2, 5, 6, 7), (2, 3, 4), False, "ties"),
    ((2, 3, 8, 12), (4, 3), True, "normal"),  # uniform windows: the regular-pool path
]


@pytest.mark.parametrize("shape, out, channels_last, values", ADAPTIVE_CASES)
def test_adaptive_pools_match_torch(shape, out, channels_last, values):
    x = _inputs(shape, values)
    rank = len(shape) - 2

    def ours_max(a):
        return adaptive_max_pool(a, out, True, channels_last=channels_last)

    def theirs_max(t):
        return _torch_op("adaptive_max_pool", rank)(t, out, return_indices=True)

    _compare(ours_max, theirs_max, x, channels_last, with_indices=True)
    if values != "special":  # torch's adaptive_avg gradient is fine with inf, ours too,
        # but inf - inf in the sums makes value comparison meaningless
        _compare(
            lambda a: adaptive_avg_pool(a, out, channels_last=channels_last),
            lambda t: _torch_op("adaptive_avg_pool", rank)(t, out),
            x,
            channels_last,
        )


@pytest.mark.parametrize(
    "rank, k, s, channels_last", [(1, 2, 2, False), (2, 2, 2, True), (3, 2, 2, False)]
)
def test_max_unpool_matches_torch(rank, k, s, channels_last):
    shape = (2, 3) + (6, 7, 5)[:rank]
    x = torch.tensor(_inputs(shape, "normal"))
    y_t, idx_t = _torch_op("max_pool", rank)(x, k, s, return_indices=True)
    size = tuple(shape[2:])

    def theirs(t):
        return _torch_op("max_unpool", rank)(t, idx_t, k, s, output_size=size)

    idx = idx_t.numpy().astype(np.int32)
    if channels_last:
        idx = _to_cl(idx)

    def ours(a):
        return max_unpool(a, jnp.asarray(idx), size, channels_last=channels_last)

    _compare(ours, theirs, y_t.numpy(), channels_last)


def test_float32_max_pool_gradient_matches_torch_with_ties():
    x = _inputs((4, 3, 12, 12), "ties").astype(np.float32)
    dy = np.random.default_rng(2).standard_normal((4, 3, 6, 6)).astype(np.float32)
    _, g = _vjp(lambda a: max_pool(a, 3, 2, 1), jnp.asarray(x), jnp.asarray(dy))
    _, g_t = _torch_vjp(lambda t: F.max_pool2d(t, 3, 2, 1), x, dy)
    # same routing; an input winning several windows may sum them in another order
    np.testing.assert_allclose(np.asarray(g), g_t, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(g) == 0, g_t == 0)


def test_max_unpool_duplicate_indices():
    # overlapping windows: one input wins two windows, so its index appears twice. The
    # values agree with PyTorch; the gradient goes to the entry written last (ours) where
    # PyTorch gives every duplicate the gathered gradient.
    x = torch.tensor([[[1.0, 5.0, 2.0, 0.0, 3.0]]], dtype=torch.float64)
    y_t, idx_t = F.max_pool1d(x, 3, 1, return_indices=True)  # [5, 5, 3] at [1, 1, 4]
    out_t = F.max_unpool1d(y_t, idx_t, 3, 1, output_size=(5,))
    with enable_x64():
        y = jnp.asarray(y_t.numpy())
        idx = jnp.asarray(idx_t.numpy().astype(np.int32))
        d_out = jnp.asarray([[[1.0, 2.0, 3.0, 4.0, 5.0]]])
        out, dy = _vjp(lambda v: max_unpool(v, idx, 5), y, d_out)
    np.testing.assert_array_equal(np.asarray(out), out_t.numpy())
    np.testing.assert_array_equal(np.asarray(dy), [[[0.0, 2.0, 5.0]]])
