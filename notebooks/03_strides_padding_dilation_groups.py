# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 3. Stride, padding, dilation and groups in the backward pass
#
# The first notebook found the two gradients of a plain convolution to be convolutions
# themselves: `dL/dW` correlates `X` with `dY`, and `dL/dX` correlates `dY`, padded "full",
# with the kernel turned by 180 degrees. Each option of a convolution layer reshapes these
# two gradient convolutions in its own way:
#
# | forward option | `dL/dX` | `dL/dW` |
# | --- | --- | --- |
# | stride `S` | `dY` *dilated* by `S` (zeros between its entries) | `dY` dilated by `S` |
# | padding `P` | the full correlation, then *cropped* by `P` | `X` padded by `P` |
# | dilation `D` | the turned kernel dilated by `D` | a correlation with *stride* `D` |
# | groups `G` | one correlation per group | only the *block diagonal* of the dense gradient |
#
# Each row gets a picture and a check: the gradient built by hand as a convolution,
# `jaxconv.conv_input_grad`/`conv_weight_grad`, and `jax.grad` of `jaxconv.conv` must all
# equal `jax.grad` of `jax.lax.conv_general_dilated` -- JAX's own automatic derivative.

# %%
from functools import partial

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from jax import lax
from matplotlib.patches import Rectangle

import jaxconv
import jaxconv.reference as ref

conv = partial(jaxconv.conv, method="direct")  # the lecture's sum, as one XLA convolution


def check(name, actual, expected, tol=1e-4):
    """Assert two arrays agree (float32 rounding allowed) and say so."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (name, actual.shape, expected.shape)
    err = float(np.max(np.abs(actual - expected))) / max(float(np.max(np.abs(expected))), 1e-30)
    assert err <= tol, f"{name}: relative error {err:.1e} > {tol:.0e}"
    print(f"{name:<58} OK  (relative error {err:.1e})")


def heat(ax, a, title):
    """A signed heat map: red positive, blue negative, white zero."""
    a = np.asarray(a)
    lim = float(np.max(np.abs(a))) or 1.0
    ax.imshow(a, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])


rng = np.random.default_rng(0)


def normal(*shape):
    """A float32 JAX array of standard-normal samples."""
    return jnp.asarray(rng.standard_normal(shape, dtype=np.float32))


def lax_grads(x, w, dy, stride=1, padding=0, dilation=1, groups=1):
    """dL/dX and dL/dW of L = sum(conv(X, W) * dY), by jax.grad of lax.conv_general_dilated."""
    pads = jaxconv.padding_pairs(padding, x.shape[2:], w.shape[2:], stride, dilation)

    def loss(x, w):
        y = lax.conv_general_dilated(
            x,
            w,
            (stride,) * 2,
            pads,
            rhs_dilation=(dilation,) * 2,
            feature_group_count=groups,
            precision=lax.Precision.HIGHEST,
        )
        return jnp.sum(y * dy)

    return jax.jit(jax.grad(loss, argnums=(0, 1)))(x, w)


def check_against_jax(label, x, w, dy, dx_by_hand, dw_by_hand, **cfg):
    """The hand-built gradients, jaxconv's public rules and jax.grad of jaxconv vs lax."""
    dx_lax, dw_lax = lax_grads(x, w, dy, **cfg)
    dx_ours, dw_ours = jax.jit(jax.grad(lambda x, w: jnp.sum(conv(x, w, **cfg) * dy), (0, 1)))(x, w)
    check(f"{label}: dX built as a convolution", dx_by_hand, dx_lax)
    check(f"{label}: dW built as a convolution", dw_by_hand, dw_lax)
    check(
        f"{label}: jaxconv.conv_input_grad", jaxconv.conv_input_grad(dy, w, x.shape, **cfg), dx_lax
    )
    check(
        f"{label}: jaxconv.conv_weight_grad",
        jaxconv.conv_weight_grad(x, dy, w.shape, **cfg),
        dw_lax,
    )
    check(f"{label}: jax.grad of jaxconv.conv", dx_ours, dx_lax)
    check(f"{label}: jax.grad of jaxconv.conv (weights)", dw_ours, dw_lax)


def turned(w):
    """The kernel rotated by 180 degrees with C_in and C_out swapped: dX's kernel."""
    return jnp.flip(w, axis=(2, 3)).transpose(1, 0, 2, 3)


def swap_nc(a):
    """(N, C, H, W) -> (C, N, H, W): for dW, channels play the batch and N the channels."""
    return a.transpose(1, 0, 2, 3)


# %% [markdown]
# ## 1. Stride: the gradient is dilated
#
# With stride `S`, output `i` reads inputs `S*i + a`. Insert `S - 1` zeros between the
# entries of `dY` ("dilate" it) and every entry lands back over the input position its
# window started at; the stride-1 recipe then applies unchanged. If the stride does not
# divide `W1 - F`, the last rows and columns of `X` never entered a window and get a zero
# gradient. Below: a 10x10 input, a 3x3 kernel, stride 2, so a 4x4 output; the dilated `dY`
# is 7x7, its full correlation with the turned kernel 9x9, and the 10th row and column are
# zeros.
#
# For the weights, `dW[a] = sum_i dY[i] X[S*i + a]`: the forward's stride becomes the
# *dilation* of `dY` in the weight-gradient correlation.

# %%
xs, ws = normal(2, 3, 10, 10), normal(4, 3, 3, 3)
dys = normal(2, 4, 4, 4)
assert jaxconv.conv_output_shape(xs.shape[2:], ws.shape[2:], stride=2) == dys.shape[2:]

zero = jnp.zeros((), dys.dtype)
dy_dilated = lax.pad(dys, zero, [(0, 0, 0), (0, 0, 0), (0, 0, 1), (0, 0, 1)])  # (2, 4, 7, 7)
dx_full = conv(dy_dilated, turned(ws), padding="FULL")  # (2, 3, 9, 9)
dx_s = jnp.pad(dx_full, [(0, 0), (0, 0), (0, 1), (0, 1)])  # row/column 9 never entered a window
dw_s = swap_nc(conv(swap_nc(xs), swap_nc(dys), dilation=2))[:, :, :3, :3]  # taps past 3 unused
print("dilated dY:", dy_dilated.shape, " full correlation:", dx_full.shape, " dX:", dx_s.shape)
check_against_jax("stride 2", xs, ws, dys, dx_s, dw_s, stride=2)
assert not np.asarray(dx_s)[..., 9, :].any() and not np.asarray(dx_s)[..., 9].any()

# %%
fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
heat(axes[0], dys[0, 0], "dL/dY (4x4)")
heat(axes[1], dy_dilated[0, 0], "dilated by the stride (7x7)")
heat(axes[2], dx_s[0, 0], "dL/dX (10x10)")
axes[2].add_patch(Rectangle((-0.5, 8.5), 10, 1, color="0.75"))
axes[2].add_patch(Rectangle((8.5, -0.5), 1, 10, color="0.75"))
axes[2].text(4.5, 9, "never read: 0", ha="center", va="center", fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 2. Padding: the gradient is cropped
#
# Padding `P` is the same as convolving the zero-padded image `X_pad`. So the input gradient
# is the stride-1 rule applied to `X_pad` -- a full correlation of `dY` that comes out the
# size of `X_pad` -- followed by cropping off `P` cells on every side: the gradient that
# flowed into the padding zeros is discarded, since they are not inputs of anything. The
# weight gradient correlates the padded `X` with `dY`.

# %%
P = 2
xp, wp = normal(1, 2, 8, 8), normal(3, 2, 5, 5)
dyp = normal(1, 3, *jaxconv.conv_output_shape((8, 8), (5, 5), padding=P))  # 8 + 4 - 5 + 1 = 8
x_padded = jnp.pad(xp, [(0, 0), (0, 0), (P, P), (P, P)])
check("conv(X, padding=2) = conv(X padded with zeros)", conv(xp, wp, padding=P), conv(x_padded, wp))
dx_padded = conv(dyp, turned(wp), padding="FULL")  # (1, 2, 12, 12): the gradient for X_pad
dx_p = dx_padded[:, :, P:-P, P:-P]  # cropped back to 8x8
dw_p = swap_nc(conv(swap_nc(x_padded), swap_nc(dyp)))
check_against_jax("padding 2", xp, wp, dyp, dx_p, dw_p, padding=P)
print(
    "gradient that fell on the padding (discarded):",
    float(jnp.abs(dx_padded).sum() - jnp.abs(dx_p).sum()),
)

# %%
fig, axes = plt.subplots(1, 2, figsize=(6.5, 3.3))
heat(axes[0], dx_padded[0, 0], "gradient for X padded (12x12)")
axes[0].add_patch(Rectangle((P - 0.5, P - 0.5), 8, 8, fill=False, ec="k", lw=2))
heat(axes[1], dx_p[0, 0], "dL/dX: the crop (8x8)")
fig.tight_layout()
plt.show()

# %% [markdown]
# `"SAME"` padding is padding too, just not always symmetric: a 3x3 kernel with stride 2
# on an 8x8 input needs one cell of padding in all, and XLA (and `jaxconv`) put the odd cell
# at the high end. The crop is then asymmetric too: nothing off the low side, one cell off
# the high side. `jaxconv.padding_pairs` says what any padding form resolves to:

# %%
pads = jaxconv.padding_pairs("SAME", (8, 8), (3, 3), stride=2)
print("SAME, 3x3 kernel, stride 2 on 8x8:", pads)
assert pads == ((0, 1), (0, 1))
dy_same, w3 = normal(1, 3, 4, 4), normal(3, 2, 3, 3)
dx_same_lax, _ = lax_grads(xp, w3, dy_same, stride=2, padding="SAME")
dy_same_dilated = lax.pad(dy_same, zero, [(0, 0, 0), (0, 0, 0), (0, 0, 1), (0, 0, 1)])
dx_for_padded = conv(dy_same_dilated, turned(w3), padding="FULL")  # 7 + 2 + 2 - 3 + 1 = 9
check(
    "SAME, stride 2: dilate, correlate, crop 0 low, 1 high",
    dx_for_padded[:, :, :-1, :-1],
    dx_same_lax,
)

# %% [markdown]
# ## 3. Dilation: the kernel is dilated, and the weight gradient strides
#
# A kernel with dilation `D` reads `X[i + D*a]`: its taps are `D` apart, as if `D - 1` zeros
# sat between them. The input gradient is the full correlation with the turned kernel,
# dilated the same way (the "full" padding is `D(F - 1)` per side). For the weight gradient
# the roles swap once more: `dW[a] = sum_i dY[i] X[i + D*a]` reads `X` every `D` cells, so
# the forward's dilation becomes the *stride* of the correlation of `X` with `dY`.

# %%
xd, wd = normal(2, 3, 9, 9), normal(4, 3, 3, 3)
dyd = normal(2, 4, 5, 5)  # 9 - 2*(3 - 1) = 5
dx_d = conv(dyd, turned(wd), padding="FULL", dilation=2)
dw_d = swap_nc(conv(swap_nc(xd), swap_nc(dyd), stride=2))
check_against_jax("dilation 2", xd, wd, dyd, dx_d, dw_d, dilation=2)

# %%
w_dilated = np.zeros((5, 5))
w_dilated[::2, ::2] = np.asarray(wd[0, 0])
# Dilating the kernel by hand (zeros between taps) gives the same convolution.
check(
    "dilation 2 = a 5x5 kernel with zeros between the taps",
    conv(xd, wd, dilation=2),
    conv(xd, jnp.zeros((4, 3, 5, 5)).at[:, :, ::2, ::2].set(wd)),
)
fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
heat(axes[0], wd[0, 0], "W (3x3)")
heat(axes[1], w_dilated, "W with dilation 2: taps 2 apart")
heat(axes[2], dx_d[0, 0], "dL/dX (9x9)")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 4. Groups: a block-diagonal weight gradient
#
# With `groups=G`, the input channels are split into `G` groups and each output channel
# sees only its own group: filters are `(C_out, C_in / G, F, F)`. That is the same as a
# dense convolution whose `(C_out, C_in)` channel matrix is *block diagonal*, with zeros
# wherever an output channel does not see an input channel.
#
# Differentiate the dense convolution and you get a gradient for every entry of that matrix
# -- but the off-diagonal entries are not parameters (they are fixed at zero). The grouped
# layer's weight gradient is exactly the diagonal blocks of the dense gradient; the input
# gradient is the dense one, with the block-diagonal kernel.

# %%
G, c_in, c_out = 3, 6, 6
xg, wg = normal(2, c_in, 7, 7), normal(c_out, c_in // G, 3, 3)
dyg = normal(2, c_out, 5, 5)
per = c_in // G  # channels per group (here also c_out // G)


def group_of(o):
    """The input channels output channel `o` sees."""
    return slice((o // per) * per, (o // per + 1) * per)


block = np.kron(np.eye(G), np.ones((c_out // G, per))).astype(bool)  # (C_out, C_in)
w_dense = jnp.zeros((c_out, c_in, 3, 3))
for o in range(c_out):  # place each filter on the diagonal block of its group
    w_dense = w_dense.at[o, group_of(o)].set(wg[o])
check(
    "grouped conv = dense conv with a block-diagonal kernel",
    conv(xg, wg, groups=G),
    conv(xg, w_dense),
)
dx_dense, dw_dense = lax_grads(xg, w_dense, dyg)
dw_blocks = jnp.stack([dw_dense[o, group_of(o)] for o in range(c_out)])
check_against_jax("groups 3", xg, wg, dyg, dx_dense, dw_blocks, groups=G)
off_block = np.abs(np.asarray(dw_dense)).sum(axis=(2, 3))[~block]
print(f"dense gradient off the blocks (not parameters): mean |dW| = {off_block.mean():.2f}")
assert off_block.min() > 0  # the dense layer would learn there; the grouped one cannot

# %%
dw_grouped = jaxconv.conv_weight_grad(xg, dyg, wg.shape, groups=G)
embedded = np.zeros((c_out, c_in))
for o in range(c_out):
    embedded[o, group_of(o)] = np.abs(np.asarray(dw_grouped[o])).sum(axis=(1, 2))
dense_energy = np.abs(np.asarray(dw_dense)).sum(axis=(2, 3))
fig, axes = plt.subplots(1, 2, figsize=(7, 3.4))
for ax, a, title in [
    (axes[0], dense_energy, "dense conv: |dL/dW| per (out, in)"),
    (axes[1], embedded, "groups=3: |dL/dW| per (out, in)"),
]:
    ax.imshow(a, cmap="Greys", vmin=0, vmax=dense_energy.max())
    for g in range(G):
        ax.add_patch(
            Rectangle((per * g - 0.5, per * g - 0.5), per, per, fill=False, ec="tab:red", lw=2)
        )
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("input channel")
    ax.set_ylabel("output channel")
fig.tight_layout()
plt.show()
check("grouped dW = the dense dW's diagonal blocks", embedded, np.where(block, dense_energy, 0.0))

# %% [markdown]
# ## 5. Everything at once, against the loops
#
# The public gradient functions take the same arguments as `conv` and handle every
# combination, asymmetric padding included. Their configuration (shapes, stride, padding,
# ...) is static: under `jax.jit` it is marked so. Against the loops of `jaxconv.reference`,
# which implement the index formulas literally:

# %%
static = ("stride", "padding", "dilation", "groups")
input_grad = jax.jit(jaxconv.conv_input_grad, static_argnames=("input_shape", *static))
weight_grad = jax.jit(jaxconv.conv_weight_grad, static_argnames=("weight_shape", *static))

configs = [
    dict(stride=2, padding=1, dilation=1, groups=1),
    dict(stride=1, padding=((0, 2), (1, 0)), dilation=2, groups=1),
    dict(stride=(2, 1), padding="SAME", dilation=1, groups=3),
    dict(stride=3, padding=2, dilation=(1, 2), groups=1),
]
xc = normal(2, 6, 11, 10)
for cfg in configs:
    wc = normal(3, 6 // cfg["groups"], 3, 3)
    out = jaxconv.conv_output_shape(
        xc.shape[2:], wc.shape[2:], cfg["stride"], cfg["padding"], cfg["dilation"]
    )
    dyc = normal(2, 3, *out)
    check(
        f"conv_input_grad  {cfg}",
        input_grad(dyc, wc, xc.shape, **cfg),
        ref.conv_input_grad(dyc, wc, xc.shape, **cfg),
    )
    check(
        f"conv_weight_grad {cfg}",
        weight_grad(xc, dyc, wc.shape, **cfg),
        ref.conv_weight_grad(xc, dyc, wc.shape, **cfg),
    )

# %% [markdown]
# ## Summary
#
# | quantity | is a convolution of | with |
# | --- | --- | --- |
# | `Y` | `X` padded by `P` | `W` (stride `S`, dilation `D`, `G` groups) |
# | `dL/dW` | `X` padded by `P` | `dY` dilated by `S`; output stride `D`; diagonal blocks only |
# | `dL/dX` | `dY` dilated by `S`, padded "full" | `W` turned 180°, dilated by `D`; then crop `P` |
#
# These are `jaxconv.conv_weight_grad` and `jaxconv.conv_input_grad`, which `jaxconv.conv`
# runs in its backward pass.
