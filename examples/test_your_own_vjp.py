"""Property-test your own ``jax.custom_vjp`` with ``jaxconv.testing`` -- a runnable template.

Two hand-written ops, each with its own VJP, checked against a reference that JAX
differentiates itself, on configurations Hypothesis draws:

- ``relu`` with the convention dReLU(0) = 0, written as a ``custom_vjp``;
- ``conv1d``: a 1-D cross-correlation written from scratch (a sum of shifted slices) whose
  VJP is the lecture's two rules -- dL/dW correlates X with dY, dL/dX correlates dY (padded)
  with the flipped kernel -- checked against ``jaxconv.conv`` and, to second order, against
  ``jax.lax``.

``assert_vjp_matches(f, f_ref, args, order=2)`` compares values, the VJP for a random
cotangent, and second derivatives (reverse-over-reverse and forward-over-reverse); a
mismatch names the quantity, the worst element's index and both values. Run it with
``python -m pytest examples/test_your_own_vjp.py``; copy it next to your own op.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

import jaxconv
from jaxconv.testing import assert_vjp_matches, enable_x64, random_array

# ------------------------------------------------------------------------- the ops


@jax.custom_vjp
def relu(x):
    return jnp.maximum(x, 0)


def _relu_fwd(x):
    return relu(x), x > 0  # residual: the mask, not x


def _relu_bwd(positive, dy):
    return (jnp.where(positive, dy, 0),)


relu.defvjp(_relu_fwd, _relu_bwd)


def _correlate(x, w):
    """``y[n, o, i] = sum_{c, a} x[n, c, i + a] w[o, c, a]`` as K shifted slices."""
    k, length = w.shape[-1], x.shape[-1] - w.shape[-1] + 1
    return sum(jnp.einsum("nci,oc->noi", x[..., a : a + length], w[..., a]) for a in range(k))


@jax.custom_vjp
def conv1d(x, w):
    return _correlate(x, w)


def _conv1d_fwd(x, w):
    return _correlate(x, w), (x, w)


def _conv1d_bwd(res, dy):
    x, w = res
    k = w.shape[-1]
    # dL/dX: dY padded by K-1 on both sides, correlated with the flipped, IO-swapped kernel.
    dy_full = jnp.pad(dy, ((0, 0), (0, 0), (k - 1, k - 1)))
    dx = _correlate(dy_full, jnp.flip(w, -1).transpose(1, 0, 2))
    # dL/dW: X correlated with dY (batch as the contracted axis).
    dw = _correlate(x.transpose(1, 0, 2), dy.transpose(1, 0, 2)).transpose(1, 0, 2)
    return dx, dw


conv1d.defvjp(_conv1d_fwd, _conv1d_bwd)

# ------------------------------------------------------------------------- the tests


@st.composite
def conv1d_cases(draw):
    """Kernel first, then an input at least as long: constructive, no ``assume``."""
    k = draw(st.integers(1, 5))
    shape_x = (draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(k, k + 8)))
    shape_w = (draw(st.integers(1, 4)), shape_x[1], k)
    return shape_x, shape_w, draw(st.integers(0, 2**31 - 1))


@settings(max_examples=10, deadline=None)
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=3), seed=st.integers(0, 2**16))
def test_relu_matches_jax(shape, seed):
    x = random_array(np.random.default_rng(seed), shape, np.float32)
    assert_vjp_matches(relu, jax.nn.relu, (x,))


@settings(max_examples=6, deadline=None)  # every example compiles both sides twice
@given(case=conv1d_cases())
def test_conv1d_matches_jaxconv_and_lax_to_second_order(case):
    shape_x, shape_w, seed = case
    with enable_x64():
        rng = np.random.default_rng(seed)
        x, w = random_array(rng, shape_x), random_array(rng, shape_w)
        assert_vjp_matches(conv1d, lambda x, w: jaxconv.conv(x, w, method="direct"), (x, w))

        def lax_conv(x, w):
            return lax.conv_general_dilated(x, w, (1,), "VALID")

        assert_vjp_matches(conv1d, lax_conv, (x, w), order=2)


def test_a_wrong_rule_is_caught_with_its_worst_element():
    """The check can fail: a rule that forgets to flip the kernel is reported precisely."""

    @jax.custom_vjp
    def unflipped(x, w):
        return _correlate(x, w)

    def bwd(res, dy):
        x, w = res
        dy_full = jnp.pad(dy, ((0, 0), (0, 0), (w.shape[-1] - 1,) * 2))
        return _correlate(dy_full, w.transpose(1, 0, 2)), _conv1d_bwd(res, dy)[1]

    unflipped.defvjp(_conv1d_fwd, bwd)
    x = jnp.arange(6.0).reshape(1, 1, 6)
    w = jnp.array([[[1.0, 2.0, 4.0]]])
    with pytest.raises(AssertionError, match=r"VJP w.r.t. argument 0: .* worst at index"):
        assert_vjp_matches(unflipped, conv1d, (x, w))
