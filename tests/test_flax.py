"""Flax integration: ``Conv(..., conv_general_dilated=jaxconv.conv_general_dilated)``.

Both Flax APIs let a layer swap its convolution function. With jaxconv's, a layer must give
the same outputs and the same parameter (and input) gradients as the default
``lax.conv_general_dilated`` layer -- for ``flax.linen.Conv``, which calls the function
positionally, and for ``flax.nnx.Conv``, which also always passes ``out_sharding=None`` --
and a small model must train identically. ``jaxconv.conv(..., channels_last=True)`` reads
Flax's kernel layout ``(*kernel, C_in // groups, C_out)`` directly.

Everything runs in float32 (what Flax users train in; XLA also compiles float64
convolutions for the CPU far more slowly), with the float32 row of the tolerance table:
a convolution function that misreads one argument is off by O(1), not by rounding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconv
from jaxconv.testing import relative_error, tolerance

flax = pytest.importorskip("flax")
nn = pytest.importorskip("flax.linen")
nnx = pytest.importorskip("flax.nnx")

# (spatial shape, in_features, layer keyword arguments). Flax's own paddings CIRCULAR and
# CAUSAL pad the input first and then call the convolution with "VALID".
CONFIGS = {
    "2d-same": ((7, 6), 3, dict(features=4, kernel_size=(3, 3), padding="SAME")),
    "2d-valid-stride2": (
        (9, 8),
        3,
        dict(features=5, kernel_size=(3, 3), strides=2, padding="VALID"),
    ),
    "2d-explicit-asym": (
        (8, 7),
        2,
        dict(features=3, kernel_size=(3, 2), strides=(2, 1), padding=((1, 2), (0, 1))),
    ),
    "2d-int-padding-groups": (
        (6, 6),
        4,
        dict(features=6, kernel_size=(3, 3), padding=1, feature_group_count=2),
    ),
    "2d-depthwise-dilated": (
        (9, 9),
        4,
        dict(
            features=8, kernel_size=(3, 3), padding="SAME", feature_group_count=4, kernel_dilation=2
        ),
    ),
    "2d-same-lower-stride": (
        (8, 9),
        2,
        dict(features=3, kernel_size=(4, 3), strides=(3, 2), padding="SAME_LOWER"),
    ),
    "2d-input-dilation": (
        (5, 6),
        2,
        dict(features=3, kernel_size=(3, 3), padding=((2, 1), (1, 1)), input_dilation=(2, 1)),
    ),
    "2d-circular": ((6, 5), 2, dict(features=3, kernel_size=(3, 3), padding="CIRCULAR")),
    "2d-no-bias": ((6, 6), 3, dict(features=2, kernel_size=(2, 2), strides=2, use_bias=False)),
    "1d-same-stride-dilation": (
        (17,),
        3,
        dict(features=4, kernel_size=(5,), strides=2, padding="SAME", kernel_dilation=2),
    ),
    "1d-causal": ((10,), 2, dict(features=3, kernel_size=(3,), padding="CAUSAL")),
    "1d-input-dilation-groups": (
        (7,),
        4,
        dict(features=2, kernel_size=(3,), padding=2, input_dilation=3, feature_group_count=2),
    ),
    "3d-same": ((4, 5, 3), 2, dict(features=3, kernel_size=(3, 2, 3), padding="SAME")),
}


def _assert_trees_close(actual, expected, dtype):
    a_leaves, a_def = jax.tree_util.tree_flatten_with_path(actual)
    e_leaves, e_def = jax.tree_util.tree_flatten(expected)
    assert a_def == e_def
    assert a_leaves, "nothing to compare"
    for (path, a), e in zip(a_leaves, e_leaves, strict=True):
        where = jax.tree_util.keystr(path) or "array"
        assert (a.shape, a.dtype) == (e.shape, e.dtype), where
        err = relative_error(a, e)
        assert err <= tolerance(dtype), f"{where}: relative error {err:.2e}"


def _outputs_and_grads(applies, params, x, ct):
    """``(apply(params, x), d<apply(params, x), ct>/d(params, x))`` for each of ``applies``,
    in one jitted call (one compilation for both layers)."""

    def run(params, x, ct):
        out = []
        for apply in applies:
            y, vjp = jax.vjp(apply, params, x)
            out.append((y, vjp(ct)))
        return out

    return jax.jit(run)(params, x, ct)


def _data(spatial, in_features, seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.standard_normal((2, *spatial, in_features), dtype=np.float32))


def _random_like(tree, seed, scale=1.0):
    """Standard-normal float32 arrays shaped like ``tree``'s leaves (arrays or shape structs).

    Used instead of the layers' own initialisers: no random-number program to compile, and
    the bias is non-zero, so a dropped bias would show.
    """
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda leaf: jnp.asarray(scale * rng.standard_normal(leaf.shape, dtype=np.float32)),
        tree,
    )


@pytest.mark.parametrize("name", list(CONFIGS))
def test_linen_conv_matches_lax_layer(name):
    spatial, c_in, kwargs = CONFIGS[name]
    x = _data(spatial, c_in)
    ours = nn.Conv(**kwargs, conv_general_dilated=jaxconv.conv_general_dilated)
    theirs = nn.Conv(**kwargs)
    params = _random_like(jax.eval_shape(theirs.init, jax.random.key(0), x), seed=1)
    ct = _random_like(jax.eval_shape(theirs.apply, params, x), seed=2)
    (y_ours, grads_ours), (y_lax, grads_lax) = _outputs_and_grads(
        [ours.apply, theirs.apply], params, x, ct
    )
    _assert_trees_close(y_ours, y_lax, np.float32)
    _assert_trees_close(grads_ours, grads_lax, np.float32)


def _nnx_kwargs(kwargs, c_in):
    kw = dict(kwargs)
    return dict(in_features=c_in, out_features=kw.pop("features"), **kw)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_nnx_conv_matches_lax_layer(name):
    spatial, c_in, kwargs = CONFIGS[name]
    x = _data(spatial, c_in)
    kw = _nnx_kwargs(kwargs, c_in)
    # The layer object holds its convolution function (in the graph); parameters are shared.
    graph_lax, abstract = nnx.split(nnx.eval_shape(lambda: nnx.Conv(**kw, rngs=nnx.Rngs(0))))
    graph_ours, _ = nnx.split(
        nnx.eval_shape(
            lambda: nnx.Conv(
                **kw, conv_general_dilated=jaxconv.conv_general_dilated, rngs=nnx.Rngs(0)
            )
        )
    )
    state = _random_like(abstract, seed=1)

    def apply(graph):
        return lambda state, x: nnx.merge(graph, state)(x)

    ct = _random_like(jax.eval_shape(apply(graph_lax), state, x), seed=2)
    (y_ours, grads_ours), (y_lax, grads_lax) = _outputs_and_grads(
        [apply(graph_ours), apply(graph_lax)], state, x, ct
    )
    _assert_trees_close(y_ours, y_lax, np.float32)
    _assert_trees_close(grads_ours, grads_lax, np.float32)


def test_string_padding_with_input_dilation_is_refused_like_lax():
    x = jnp.ones((1, 5, 5, 2))
    layer = nn.Conv(3, (3, 3), padding="SAME", input_dilation=2)
    with pytest.raises(ValueError, match="String padding is not implemented"):
        jax.eval_shape(layer.init, jax.random.key(0), x)
    ours = nn.Conv(
        3,
        (3, 3),
        padding="SAME",
        input_dilation=2,
        conv_general_dilated=jaxconv.conv_general_dilated,
    )
    with pytest.raises(ValueError, match=r"`padding` strings are not implemented with `lhs_d"):
        jax.eval_shape(ours.init, jax.random.key(0), x)


@pytest.mark.parametrize("preferred", [None, jnp.float32], ids=["bf16", "bf16-preferred-f32"])
def test_nnx_bfloat16_layer_matches_lax_layer(preferred):
    # Flax passes `preferred_element_type` to the convolution function only when it is set.
    kw = dict(
        in_features=4,
        out_features=6,
        kernel_size=(3, 3),
        strides=2,
        feature_group_count=2,
        dtype=jnp.bfloat16,
        param_dtype=jnp.bfloat16,
    )
    if preferred is not None:
        kw["preferred_element_type"] = preferred
    x = _data((8, 7), 4).astype(jnp.bfloat16)
    graph_lax, abstract = nnx.split(nnx.eval_shape(lambda: nnx.Conv(**kw, rngs=nnx.Rngs(0))))
    graph_ours, _ = nnx.split(
        nnx.eval_shape(
            lambda: nnx.Conv(
                **kw, conv_general_dilated=jaxconv.conv_general_dilated, rngs=nnx.Rngs(0)
            )
        )
    )
    state = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), _random_like(abstract, 1))

    def apply(graph):
        return lambda state, x: nnx.merge(graph, state)(x)

    with jax.numpy_dtype_promotion("standard"):
        out = jax.eval_shape(apply(graph_lax), state, x)
    assert out.dtype == (jnp.bfloat16 if preferred is None else preferred)
    ct = _random_like(out, seed=2).astype(out.dtype)
    # Flax adds the bfloat16 bias to a float32 output: standard promotion, as users run it
    # (the suite's conftest makes promotion strict).
    with jax.numpy_dtype_promotion("standard"):
        (y_ours, grads_ours), (y_lax, grads_lax) = _outputs_and_grads(
            [apply(graph_ours), apply(graph_lax)], state, x, ct
        )
    _assert_trees_close(y_ours, y_lax, jnp.bfloat16)
    _assert_trees_close(grads_ours, grads_lax, jnp.bfloat16)


def test_nnx_out_sharding_follows_lax():
    """``out_sharding`` goes to lax: ``None`` works anywhere; a bare PartitionSpec needs a mesh
    (lax refuses it without one, and so does jaxconv, naming the argument)."""
    layer = nnx.Conv(
        2, 3, (3,), rngs=nnx.Rngs(0), conv_general_dilated=jaxconv.conv_general_dilated
    )
    x = jnp.ones((1, 5, 2))
    assert layer(x, out_sharding=None).shape == (1, 5, 3)
    with pytest.raises(ValueError, match=r"`out_sharding`"):
        layer(x, out_sharding=jax.sharding.PartitionSpec())


# ----------------------------------------------------------------------- training


class _LinenNet(nn.Module):
    conv_fn: object = None

    @nn.compact
    def __call__(self, x):
        kw = {} if self.conv_fn is None else dict(conv_general_dilated=self.conv_fn)
        x = nn.relu(nn.Conv(6, (3, 3), strides=2, padding="SAME", **kw)(x))
        x = nn.relu(
            nn.Conv(6, (3, 3), padding=1, feature_group_count=3, kernel_dilation=2, **kw)(x)
        )
        return nn.Conv(2, (1, 1), **kw)(x).mean(axis=(1, 2))


def _sgd_run(loss, params, steps=5, lr=0.1):
    step = jax.jit(jax.value_and_grad(loss))
    history, trajectory = [], []
    for _ in range(steps):
        value, grads = step(params)
        params = jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads)
        history.append(float(value))
        trajectory.append(params)
    return history, trajectory


def _batch():
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((8, 10, 10, 3), dtype=np.float32))
    target = jnp.asarray(rng.standard_normal((8, 2), dtype=np.float32))
    return x, target


def test_linen_model_trains_identically():
    x, target = _batch()
    ours, theirs = _LinenNet(jaxconv.conv_general_dilated), _LinenNet()
    params = _random_like(jax.eval_shape(theirs.init, jax.random.key(0), x), seed=4, scale=0.3)

    def loss(model):
        return lambda p: jnp.mean((model.apply(p, x) - target) ** 2)

    hist_ours, traj_ours = _sgd_run(loss(ours), params)
    hist_lax, traj_lax = _sgd_run(loss(theirs), params)
    assert hist_ours[-1] < hist_ours[0]  # it does train
    np.testing.assert_allclose(hist_ours, hist_lax, rtol=1e-4)
    for p_ours, p_lax in zip(traj_ours, traj_lax, strict=True):
        _assert_trees_close(p_ours, p_lax, np.float32)


class _NnxNet(nnx.Module):
    def __init__(self, conv_fn, *, rngs):
        kw = {} if conv_fn is None else dict(conv_general_dilated=conv_fn)
        self.conv1 = nnx.Conv(3, 6, (3, 3), strides=2, padding="SAME", rngs=rngs, **kw)
        self.conv2 = nnx.Conv(
            6, 6, (3, 3), padding=1, feature_group_count=3, kernel_dilation=2, rngs=rngs, **kw
        )
        self.head = nnx.Conv(6, 2, (1, 1), rngs=rngs, **kw)

    def __call__(self, x):
        x = nnx.relu(self.conv1(x))
        x = nnx.relu(self.conv2(x))
        return self.head(x).mean(axis=(1, 2))


def test_nnx_model_trains_identically():
    x, target = _batch()
    graph_ours, _ = nnx.split(
        nnx.eval_shape(lambda: _NnxNet(jaxconv.conv_general_dilated, rngs=nnx.Rngs(0)))
    )
    graph_lax, abstract = nnx.split(nnx.eval_shape(lambda: _NnxNet(None, rngs=nnx.Rngs(0))))
    state = _random_like(abstract, seed=4, scale=0.3)

    def loss(graph):
        return lambda state: jnp.mean((nnx.merge(graph, state)(x) - target) ** 2)

    hist_ours, traj_ours = _sgd_run(loss(graph_ours), state)
    hist_lax, traj_lax = _sgd_run(loss(graph_lax), state)
    assert hist_ours[-1] < hist_ours[0]
    np.testing.assert_allclose(hist_ours, hist_lax, rtol=1e-4)
    for s_ours, s_lax in zip(traj_ours, traj_lax, strict=True):
        _assert_trees_close(s_ours, s_lax, np.float32)


# ------------------------------------------------------------- channels_last conv


@pytest.mark.parametrize(
    "spatial, c_in, flax_kwargs, conv_kwargs",
    [
        (
            (9, 8),
            4,
            dict(features=6, kernel_size=(3, 3), strides=2, padding="SAME", feature_group_count=2),
            dict(stride=2, padding="SAME", groups=2),
        ),
        (
            (8, 9),
            3,
            dict(features=5, kernel_size=(3, 2), padding=((1, 0), (2, 1)), kernel_dilation=(1, 2)),
            dict(padding=((1, 0), (2, 1)), dilation=(1, 2)),
        ),
        (
            (12,),
            2,
            dict(features=3, kernel_size=(4,), strides=3, padding="VALID"),
            dict(stride=3, padding="VALID"),
        ),
    ],
    ids=["2d-same-stride-groups", "2d-explicit-dilated", "1d-valid-stride"],
)
def test_channels_last_conv_reads_a_flax_kernel(spatial, c_in, flax_kwargs, conv_kwargs):
    x = _data(spatial, c_in)
    layer = nn.Conv(**flax_kwargs)
    params = _random_like(jax.eval_shape(layer.init, jax.random.key(0), x), seed=1)
    kernel, bias = params["params"]["kernel"], params["params"]["bias"]
    assert kernel.shape == (
        *flax_kwargs["kernel_size"],
        c_in // conv_kwargs.get("groups", 1),
        flax_kwargs["features"],
    )
    expected = jax.jit(layer.apply)(params, x)
    actual = jaxconv.conv(x, kernel, bias, channels_last=True, **conv_kwargs)
    _assert_trees_close(actual, expected, np.float32)
