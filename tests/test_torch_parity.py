"""PyTorch as a second oracle: conv (every padding mode, groups, strings), conv_transpose,
and the public gradient functions against torch.nn.grad. Skipped when torch is absent."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jaxconv
from jaxconv.testing import ConvCase, conv_cases, enable_x64

torch = pytest.importorskip("torch")
F = torch.nn.functional


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
