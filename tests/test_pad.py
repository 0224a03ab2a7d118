"""Padding modes: the hand-derived adjoint folds each copied cell's gradient back."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxconv.convolution.padding_modes import pad, pad_adjoint
from jaxconv.testing import enable_x64


def test_reflect_by_hand():
    x = jnp.array([1.0, 2.0, 3.0, 4.0])
    assert pad(x, "reflect", (0,), ((2, 1),)).tolist() == [3, 2, 1, 2, 3, 4, 3]
    # gradient of the sum: each cell counts its copies (+1 for itself)
    g = jax.grad(lambda x: pad(x, "reflect", (0,), ((2, 1),)).sum())(x)
    assert g.tolist() == [1, 2, 3, 1]
    g = jax.grad(lambda x: pad(x, "replicate", (0,), ((2, 1),)).sum())(x)
    assert g.tolist() == [3, 1, 1, 2]
    g = jax.grad(lambda x: pad(x, "circular", (0,), ((2, 1),)).sum())(x)
    assert g.tolist() == [2, 1, 2, 2]


@given(
    mode=st.sampled_from(["reflect", "replicate", "circular"]),
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=3),
    data=st.data(),
)
def test_adjoint_identity(mode, shape, data):
    """<pad(x), g> == <x, pad_adjoint(g)> for every mode and padding PyTorch allows."""
    limit = {"reflect": lambda s: s - 1, "replicate": lambda s: 4, "circular": lambda s: s}[mode]
    pairs = tuple(
        (data.draw(st.integers(0, limit(s))), data.draw(st.integers(0, limit(s)))) for s in shape
    )
    axes = tuple(range(1, len(shape) + 1))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1)))
    jmode = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}[mode]
    full = [(0, 0), *pairs]

    @jax.jit  # one program per example (op by op, each example compiled dozens: 38 s in CI)
    def sides(x, g):
        lhs = jnp.vdot(pad(x, mode, axes, pairs), g)
        rhs = jnp.vdot(x, pad_adjoint(g, mode, axes, pairs))
        # and the VJP equals autodiff of jnp.pad
        ref = jax.vjp(lambda x: jnp.pad(x, full, mode=jmode), x)[1](g)[0]
        return lhs, rhs, jax.vjp(lambda x: pad(x, mode, axes, pairs), x)[1](g)[0], ref

    with enable_x64():
        x = jnp.asarray(rng.standard_normal((2, *shape)))
        g = jnp.asarray(rng.standard_normal(pad(x, mode, axes, pairs).shape))
        lhs, rhs, vjp, ref = sides(x, g)
        assert abs(float(lhs) - float(rhs)) <= 1e-10 * (1 + abs(float(lhs)))
        np.testing.assert_allclose(vjp, ref, atol=1e-12)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_pad_second_order(mode):
    with enable_x64():
        x = jnp.asarray(np.random.default_rng(0).standard_normal((3, 4)))
        f = lambda x: jnp.sum(jnp.sin(pad(x, mode, (0, 1), ((1, 2), (2, 1)))))  # noqa: E731
        jmode = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}[mode]
        g = lambda x: jnp.sum(jnp.sin(jnp.pad(x, ((1, 2), (2, 1)), mode=jmode)))  # noqa: E731
        np.testing.assert_allclose(jax.hessian(f)(x), jax.hessian(g)(x), atol=1e-12)
