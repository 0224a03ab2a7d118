"""Three small CNNs for the ``models`` suite, written once against a table of ops.

The networks -- MobileNetV2-style, ConvNeXt-style and ResNet-style, sized for CIFAR
(3x32x32 inputs, 10 classes) -- call every layer through an :class:`Ops` table, so the same
code runs with jaxconv's ops (:func:`jaxconv_ops`), with ``jax.lax``'s (:func:`lax_ops`) and,
in :mod:`jaxconv._bench.torch_networks`, with PyTorch's: the three contenders compute the
same function of the same parameters, layer for layer.

Parameters are plain pytrees (nested dicts and lists of arrays) created by ``init`` as NumPy
arrays from a seed, with convolution kernels in the channels-first layout
``(C_out, C_in // groups, kH, kW)``; :func:`to_layout` moves them to channels-last
``(kH, kW, C_in // groups, C_out)`` for the NHWC variants (XLA's CPU convolution prefers
channels-last). The architecture itself (strides, widths) is static: it lives in the network
object, never in the parameters.

No batch normalisation: a train step's batch statistics would add glue that is the same
for every contender and that PyTorch fuses into its convolutions only at inference.
Every convolution has a bias.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "NETWORKS",
    "Call",
    "ConvNeXt",
    "MobileNetV2",
    "Ops",
    "ResNet",
    "Spec",
    "classify",
    "inputs",
    "jaxconv_ops",
    "kinds_in_order",
    "lax_ops",
    "loss_fn",
    "network",
    "record",
    "to_layout",
]

Params = Any

OP_NAMES = (
    "conv",
    "max_pool",
    "global_avg_pool",
    "relu",
    "relu6",
    "gelu",
    "layer_norm",
    "dense",
)
"""The ops a network calls through its table (and :func:`record` sees)."""


@dataclasses.dataclass(frozen=True)
class Ops:
    """The ops a network is written against. Arrays are positional, configuration keyword.

    - ``conv(x, w, b, *, stride, padding, groups)``: 2-D convolution plus bias, symmetric
      integer ``padding``; ``x``/``w`` in the table's layout.
    - ``max_pool(x, *, window, stride, padding)``: square window, symmetric padding.
    - ``global_avg_pool(x)``: ``(N, C)``, the mean over the spatial axes.
    - ``relu(x)``, ``relu6(x)``, ``gelu(x)`` (exact, erf-based).
    - ``layer_norm(x, scale, bias)``: normalise over the channel axis (eps 1e-6), then scale
      and shift per channel (ConvNeXt's channels-first LayerNorm).
    - ``dense(x, w, b)``: ``x @ w + b`` for ``x`` ``(N, F)``, ``w`` ``(F, O)``.
    - ``cross_entropy(logits, labels)``: mean softmax cross-entropy, integer labels.
    """

    name: str
    channels_last: bool
    conv: Callable[..., Any]
    max_pool: Callable[..., Any]
    global_avg_pool: Callable[..., Any]
    relu: Callable[..., Any]
    relu6: Callable[..., Any]
    gelu: Callable[..., Any]
    layer_norm: Callable[..., Any]
    dense: Callable[..., Any]
    cross_entropy: Callable[..., Any]


# --------------------------------------------------------------------------- JAX tables


def _jax_glue(channels_last: bool) -> dict[str, Callable[..., Any]]:
    """The ops that are the same for lax and jaxconv: activations, norms, the head."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    caxis = 3 if channels_last else 1

    def per_channel(v):
        shape = [1, 1, 1, 1]
        shape[caxis] = -1
        return v.reshape(shape)

    def layer_norm(x, scale, bias):
        mean = jnp.mean(x, axis=caxis, keepdims=True)
        centred = x - mean
        var = jnp.mean(jnp.square(centred), axis=caxis, keepdims=True)
        return centred * lax.rsqrt(var + 1e-6) * per_channel(scale) + per_channel(bias)

    def cross_entropy(logits, labels):
        logp = jax.nn.log_softmax(logits, axis=-1)
        picked = jnp.take_along_axis(logp, labels[:, None], axis=-1)
        return -jnp.mean(picked)

    return {
        "relu": jax.nn.relu,
        "relu6": jax.nn.relu6,
        "gelu": lambda x: jax.nn.gelu(x, approximate=False),
        "layer_norm": layer_norm,
        "dense": lambda x, w, b: x @ w + b[None, :],
        "cross_entropy": cross_entropy,
        "global_avg_pool": lambda x: jnp.mean(x, axis=(1, 2) if channels_last else (2, 3)),
    }


def lax_ops(channels_last: bool = False) -> Ops:
    """``lax.conv_general_dilated``, ``lax.reduce_window`` and ``jnp.mean``: XLA's own ops,
    differentiated by JAX's transpose rules."""
    import jax.numpy as jnp
    from jax import lax

    dims = ("NHWC", "HWIO", "NHWC") if channels_last else ("NCHW", "OIHW", "NCHW")
    glue = _jax_glue(channels_last)

    def conv(x, w, b, *, stride, padding, groups):
        y = lax.conv_general_dilated(
            x,
            w,
            window_strides=(stride, stride),
            padding=((padding, padding), (padding, padding)),
            dimension_numbers=dims,
            feature_group_count=groups,
        )
        return y + (b.reshape(1, 1, 1, -1) if channels_last else b.reshape(1, -1, 1, 1))

    def max_pool(x, *, window, stride, padding):
        spatial = (1, window, window, 1) if channels_last else (1, 1, window, window)
        strides = (1, stride, stride, 1) if channels_last else (1, 1, stride, stride)
        pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
        if not channels_last:
            pad = ((0, 0), (0, 0), (padding, padding), (padding, padding))
        return lax.reduce_window(x, -jnp.inf, lax.max, spatial, strides, pad)

    return Ops(
        name="lax",
        channels_last=channels_last,
        conv=conv,
        max_pool=max_pool,
        **glue,
    )


def jaxconv_ops(channels_last: bool = False, method: str = "auto") -> Ops:
    """``jaxconv.conv`` (``method`` for every convolution), ``jaxconv.max_pool`` and
    ``jaxconv.adaptive_avg_pool``; activations, norms and the head as in :func:`lax_ops`."""
    import jaxconv

    glue = _jax_glue(channels_last)

    def conv(x, w, b, *, stride, padding, groups):
        return jaxconv.conv(
            x,
            w,
            b,
            stride=stride,
            padding=padding,
            groups=groups,
            channels_last=channels_last,
            method=method,
        )

    def max_pool(x, *, window, stride, padding):
        return jaxconv.max_pool(x, window, stride, padding, channels_last=channels_last)

    def global_avg_pool(x):
        y = jaxconv.adaptive_avg_pool(x, 1, channels_last=channels_last)
        return y.reshape(y.shape[0], -1)

    glue["global_avg_pool"] = global_avg_pool
    name = "jaxconv" if method == "auto" else f"jaxconv[{method}]"
    return Ops(name=name, channels_last=channels_last, conv=conv, max_pool=max_pool, **glue)


# --------------------------------------------------------------------------- parameters


@dataclasses.dataclass(frozen=True)
class Spec:
    """How big: ``batch`` images of ``3 x image x image``; ``depths[i]`` blocks in stage ``i``
    (at most three stages: a network uses as many of its stages as ``depths`` has entries)."""

    batch: int = 32
    image: int = 32
    depths: tuple[int, ...] = (2, 2, 2)
    classes: int = 10

    @property
    def stages(self) -> int:
        return len(self.depths)

    @classmethod
    def full(cls) -> Spec:
        return cls()

    @classmethod
    def quick(cls) -> Spec:
        """Smoke-test size: tiny batch and image, two stages of two and one blocks (so strided
        and residual blocks both occur), the same kinds of layers."""
        return cls(batch=2, image=16, depths=(2, 1))


def _conv_param(rng: np.random.Generator, c_out: int, c_in_per_group: int, k: int) -> dict:
    fan_in = c_in_per_group * k * k
    w = rng.standard_normal((c_out, c_in_per_group, k, k)) * math.sqrt(2.0 / fan_in)
    return {"w": w.astype(np.float32), "b": np.zeros((c_out,), np.float32)}


def _dense_param(rng: np.random.Generator, f_in: int, f_out: int) -> dict:
    w = rng.standard_normal((f_in, f_out)) / math.sqrt(f_in)
    return {"w": w.astype(np.float32), "b": np.zeros((f_out,), np.float32)}


def _norm_param(c: int) -> dict:
    return {"scale": np.ones((c,), np.float32), "bias": np.zeros((c,), np.float32)}


def to_layout(params: Params, channels_last: bool) -> Params:
    """Channels-first kernels ``(O, I, kH, kW)`` as ``(kH, kW, I, O)`` when ``channels_last``
    (every 4-D leaf is a kernel); other leaves unchanged. Works on NumPy and JAX leaves."""
    import jax

    if not channels_last:
        return params
    return jax.tree_util.tree_map(lambda a: a.transpose(2, 3, 1, 0) if a.ndim == 4 else a, params)


def inputs(spec: Spec, seed: int = 0, channels_last: bool = False):
    """A batch ``(x, labels)`` as NumPy arrays: ``x`` ``(N, 3, H, W)`` (or NHWC)."""
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((spec.batch, 3, spec.image, spec.image)).astype(np.float32)
    labels = rng.integers(0, spec.classes, size=(spec.batch,)).astype(np.int32)
    return (x.transpose(0, 2, 3, 1) if channels_last else x), labels


# --------------------------------------------------------------------------- networks


@dataclasses.dataclass(frozen=True)
class MobileNetV2:
    """3x3 stem (3 -> 16), three stages of inverted residual blocks (1x1 expand x6 -> 3x3
    depthwise, stride 2 in each stage's first block -> 1x1 project, residual when shapes
    match) to 24, 32 and 64 channels, a 1x1 to 256, global average pool, dense head."""

    spec: Spec = Spec()
    name: str = "MobileNetV2"
    stem: int = 16
    stages: tuple[int, ...] = (24, 32, 64)
    expand: int = 6
    last: int = 256

    def blocks(self) -> list[tuple[int, int, int]]:
        """``(c_in, c_out, stride)`` of every inverted residual block."""
        out, c = [], self.stem
        for width, depth in zip(self.stages, self.spec.depths, strict=False):
            for i in range(depth):
                out.append((c, width, 2 if i == 0 else 1))
                c = width
        return out

    def init(self, seed: int = 0) -> Params:
        rng = np.random.default_rng(seed)
        blocks = []
        for c_in, c_out, _ in self.blocks():
            hidden = c_in * self.expand
            blocks.append(
                {
                    "expand": _conv_param(rng, hidden, c_in, 1),
                    "dw": _conv_param(rng, hidden, 1, 3),
                    "project": _conv_param(rng, c_out, hidden, 1),
                }
            )
        return {
            "stem": _conv_param(rng, self.stem, 3, 3),
            "blocks": blocks,
            "last": _conv_param(rng, self.last, self.stages[self.spec.stages - 1], 1),
            "head": _dense_param(rng, self.last, self.spec.classes),
        }

    def apply(self, ops: Ops, params: Params, x: Any) -> Any:
        p = params["stem"]
        x = ops.relu6(ops.conv(x, p["w"], p["b"], stride=1, padding=1, groups=1))
        for (c_in, c_out, stride), p in zip(self.blocks(), params["blocks"], strict=True):
            hidden = c_in * self.expand
            h = ops.relu6(ops.conv(x, *_wb(p["expand"]), stride=1, padding=0, groups=1))
            h = ops.relu6(ops.conv(h, *_wb(p["dw"]), stride=stride, padding=1, groups=hidden))
            h = ops.conv(h, *_wb(p["project"]), stride=1, padding=0, groups=1)
            x = x + h if (stride == 1 and c_in == c_out) else h
        x = ops.relu6(ops.conv(x, *_wb(params["last"]), stride=1, padding=0, groups=1))
        return ops.dense(ops.global_avg_pool(x), *_wb(params["head"]))


@dataclasses.dataclass(frozen=True)
class ConvNeXt:
    """4x4/4 patchify stem (3 -> 48) + layer norm; three stages (48, 96, 192 channels) of
    blocks 7x7 depthwise -> layer norm -> 1x1 expand x4 -> GELU -> 1x1 project (+ residual);
    layer norm + 2x2/2 convolution between stages; global average pool, layer norm, dense."""

    spec: Spec = Spec()
    name: str = "ConvNeXt"
    stages: tuple[int, ...] = (48, 96, 192)
    expand: int = 4

    def init(self, seed: int = 0) -> Params:
        rng = np.random.default_rng(seed)
        stages, downs = [], []
        widths = self.stages[: self.spec.stages]
        for i, (c, depth) in enumerate(zip(widths, self.spec.depths, strict=True)):
            if i:
                prev = widths[i - 1]
                downs.append({"norm": _norm_param(prev), **_conv_param(rng, c, prev, 2)})
            stages.append(
                [
                    {
                        "dw": _conv_param(rng, c, 1, 7),
                        "norm": _norm_param(c),
                        "expand": _conv_param(rng, c * self.expand, c, 1),
                        "project": _conv_param(rng, c, c * self.expand, 1),
                    }
                    for _ in range(depth)
                ]
            )
        return {
            "stem": {**_conv_param(rng, self.stages[0], 3, 4), "norm": _norm_param(self.stages[0])},
            "stages": stages,
            "downs": downs,
            "norm": _norm_param(widths[-1]),
            "head": _dense_param(rng, widths[-1], self.spec.classes),
        }

    def apply(self, ops: Ops, params: Params, x: Any) -> Any:
        p = params["stem"]
        x = ops.conv(x, p["w"], p["b"], stride=4, padding=0, groups=1)
        x = ops.layer_norm(x, *_sb(p["norm"]))
        widths = self.stages[: self.spec.stages]
        for i, (c, blocks) in enumerate(zip(widths, params["stages"], strict=True)):
            if i:
                d = params["downs"][i - 1]
                x = ops.layer_norm(x, *_sb(d["norm"]))
                x = ops.conv(x, d["w"], d["b"], stride=2, padding=0, groups=1)
            for p in blocks:
                h = ops.conv(x, *_wb(p["dw"]), stride=1, padding=3, groups=c)
                h = ops.layer_norm(h, *_sb(p["norm"]))
                h = ops.gelu(ops.conv(h, *_wb(p["expand"]), stride=1, padding=0, groups=1))
                x = x + ops.conv(h, *_wb(p["project"]), stride=1, padding=0, groups=1)
        x = ops.global_avg_pool(x)
        # The final norm acts on (N, C): a 1x1 "image" in the table's layout.
        n, c = x.shape
        x = ops.layer_norm(
            x.reshape(n, 1, 1, c) if ops.channels_last else x.reshape(n, c, 1, 1),
            *_sb(params["norm"]),
        )
        return ops.dense(x.reshape(n, c), *_wb(params["head"]))


@dataclasses.dataclass(frozen=True)
class ResNet:
    """3x3 stem (3 -> 32) + ReLU, 3x3/2 max pool, three stages (32, 64, 128 channels; stride
    1, 2, 2) of basic blocks (3x3 -> ReLU -> 3x3, + shortcut -> ReLU; the shortcut is a
    1x1/2 convolution where the shape changes), global average pool, dense head."""

    spec: Spec = Spec()
    name: str = "ResNet"
    stem: int = 32
    stages: tuple[int, ...] = (32, 64, 128)

    def blocks(self) -> list[tuple[int, int, int]]:
        """``(c_in, c_out, stride)`` of every basic block."""
        out, c = [], self.stem
        for s, (width, depth) in enumerate(zip(self.stages, self.spec.depths, strict=False)):
            for i in range(depth):
                out.append((c, width, 2 if (i == 0 and s > 0) else 1))
                c = width
        return out

    def init(self, seed: int = 0) -> Params:
        rng = np.random.default_rng(seed)
        blocks = []
        for c_in, c_out, stride in self.blocks():
            # The second convolution starts small (as "zero-init residual" does, not quite
            # zero): without normalisation, each residual sum would double the variance.
            conv2 = _conv_param(rng, c_out, c_out, 3)
            conv2["w"] *= np.float32(0.25)
            b = {"conv1": _conv_param(rng, c_out, c_in, 3), "conv2": conv2}
            if stride != 1 or c_in != c_out:
                b["shortcut"] = _conv_param(rng, c_out, c_in, 1)
            blocks.append(b)
        return {
            "stem": _conv_param(rng, self.stem, 3, 3),
            "blocks": blocks,
            "head": _dense_param(rng, self.stages[self.spec.stages - 1], self.spec.classes),
        }

    def apply(self, ops: Ops, params: Params, x: Any) -> Any:
        p = params["stem"]
        x = ops.relu(ops.conv(x, p["w"], p["b"], stride=1, padding=1, groups=1))
        x = ops.max_pool(x, window=3, stride=2, padding=1)
        for (_, _, stride), p in zip(self.blocks(), params["blocks"], strict=True):
            h = ops.relu(ops.conv(x, *_wb(p["conv1"]), stride=stride, padding=1, groups=1))
            h = ops.conv(h, *_wb(p["conv2"]), stride=1, padding=1, groups=1)
            if "shortcut" in p:
                x = ops.conv(x, *_wb(p["shortcut"]), stride=stride, padding=0, groups=1)
            x = ops.relu(x + h)
        return ops.dense(ops.global_avg_pool(x), *_wb(params["head"]))


def _wb(p: dict) -> tuple[Any, Any]:
    return p["w"], p["b"]


def _sb(p: dict) -> tuple[Any, Any]:
    return p["scale"], p["bias"]


NETWORKS: dict[str, type] = {"mobilenet": MobileNetV2, "convnext": ConvNeXt, "resnet": ResNet}
"""Short name -> network class (each takes a :class:`Spec`)."""


def network(name: str, spec: Spec | None = None) -> Any:
    """The network called ``name`` (a key of :data:`NETWORKS`) at size ``spec``."""
    if name not in NETWORKS:
        raise ValueError(f"`name` must be one of {', '.join(NETWORKS)}, got {name!r}")
    return NETWORKS[name](spec=spec or Spec.full())


def loss_fn(net: Any, ops: Ops) -> Callable[..., Any]:
    """``loss(params, x, labels)``: mean softmax cross-entropy of ``net`` under ``ops``."""

    def loss(params, x, labels):
        return ops.cross_entropy(net.apply(ops, params, x), labels)

    return loss


# --------------------------------------------------------------------------- recording


@dataclasses.dataclass(frozen=True)
class Call:
    """One op a network called: its name, the shapes of its array arguments (in order) and
    its keyword configuration, as ``(key, value)`` pairs. Hashable, so equal layers merge."""

    op: str
    shapes: tuple[tuple[int, ...], ...]
    config: tuple[tuple[str, Any], ...]


def record(net: Any, ops: Ops, params: Params, x: Any) -> list[Call]:
    """Every op call of one forward pass of ``net`` under ``ops``, in order (traced with
    ``jax.eval_shape``: nothing is computed)."""
    import jax

    calls: list[Call] = []

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*arrays: Any, **config: Any) -> Any:
            shapes = tuple(tuple(int(d) for d in a.shape) for a in arrays)
            calls.append(Call(name, shapes, tuple(sorted(config.items()))))
            return fn(*arrays, **config)

        return wrapped

    wrapped: dict[str, Any] = {n: wrap(n, getattr(ops, n)) for n in OP_NAMES}
    traced = dataclasses.replace(ops, **wrapped)
    jax.eval_shape(lambda p, x: net.apply(traced, p, x), params, x)
    return calls


def classify(call: Call, channels_last: bool, first: bool) -> str:
    """The layer kind a call belongs to in the breakdown.

    ``"stem"`` (the first convolution), ``"1x1"`` (any stride), ``"dw KxK"`` or
    ``"dw KxK/S"`` (depthwise), ``"dense KxK"``/``"dense KxK/S"`` (ordinary convolutions),
    ``"pool"`` (max and global average), ``"norm/act"`` (activations and layer norm),
    ``"head"`` (the dense layer).
    """
    if call.op == "conv":
        if first:
            return "stem"
        config = dict(call.config)
        x_shape, w_shape = call.shapes[0], call.shapes[1]
        k = w_shape[0] if channels_last else w_shape[2]
        c_in = x_shape[3] if channels_last else x_shape[1]
        stride = f"/{config['stride']}" if config["stride"] != 1 else ""
        if config["groups"] == c_in and c_in > 1:
            return f"dw {k}x{k}{stride}"
        if k == 1:
            return "1x1"
        return f"dense {k}x{k}{stride}"
    if call.op in ("max_pool", "global_avg_pool"):
        return "pool"
    if call.op == "dense":
        return "head"
    return "norm/act"


def kinds_in_order(calls: Sequence[Call], channels_last: bool) -> list[str]:
    """:func:`classify` of every call (the first convolution is the stem)."""
    out, seen_conv = [], False
    for call in calls:
        out.append(classify(call, channels_last, first=call.op == "conv" and not seen_conv))
        seen_conv = seen_conv or call.op == "conv"
    return out
