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
# # 1. Backpropagation through a convolution
#
# The lecture on convolutional layers, worked through with `jaxconv`: the output size of a
# layer, the forward pass as loops, cross-correlation versus true convolution, and the two
# gradients backpropagation needs -- with respect to the weights and with respect to the
# input -- each of which turns out to be a convolution itself. Then agreement with
# `jax.grad` in a small network, and a second derivative.
#
# Every claim below is checked by an assertion, so this notebook is also a test
# (`tests/test_notebooks.py` runs it). Conventions: `jaxconv` is channels-first like
# PyTorch -- images are `(N, C, H, W)`, filters `(C_out, C_in, F, F)` -- and, like every
# deep-learning framework, it computes a *cross-correlation* unless asked to flip the kernel.
# Strides, padding, dilation and groups have a notebook of their own (the third).

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

# By default `jaxconv.conv` picks among several algorithms (`method="auto"`). This notebook
# is about the direct one -- the lecture's sum, handed to XLA as one convolution -- so it
# asks for that one by name.
conv = partial(jaxconv.conv, method="direct")


def check(name, actual, expected, tol=1e-4):
    """Assert two arrays agree (float32 rounding allowed) and say so."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (name, actual.shape, expected.shape)
    err = float(np.max(np.abs(actual - expected))) / max(float(np.max(np.abs(expected))), 1e-30)
    assert err <= tol, f"{name}: relative error {err:.1e} > {tol:.0e}"
    print(f"{name:<55} OK  (relative error {err:.1e})")


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


# %% [markdown]
# ## 1. How big is the output?
#
# A 32x32x3 image and six 5x5x3 filters, stride 1, no padding. A 5-wide filter fits in
# 32 - 5 + 1 = 28 positions along each axis; in general
#
# $$W_2 = \frac{W_1 - F + 2P}{S} + 1$$
#
# (rounded down when the stride does not divide evenly). Each filter produces one 28x28
# activation map, so six filters give a 28x28x6 output volume.

# %%
assert jaxconv.conv_output_shape((32, 32), (5, 5)) == (28, 28)

for stride, padding, dilation in [(1, 0, 1), (1, 2, 1), (2, 0, 1), (3, 0, 1), (1, 0, 2)]:
    out = jaxconv.conv_output_shape((32, 32), (5, 5), stride, padding, dilation)
    print(f"stride={stride} padding={padding} dilation={dilation}: {out}")

# One 32x32 RGB image (a disk, a ramp and stripes, plus a little noise) ...
rows_, cols_ = np.mgrid[0:32, 0:32]
picture = np.stack(
    [
        ((rows_ - 14) ** 2 + (cols_ - 12) ** 2 < 70) - 0.3,  # red: a disk
        cols_ / 31 - 0.5,  # green: a left-to-right ramp
        np.sin(rows_ / 2.0) / 2,  # blue: horizontal stripes
    ]
)
x = jnp.asarray(picture[None], jnp.float32) + 0.1 * normal(1, 3, 32, 32)
# ... six 5x5x3 filters and one bias per filter.
w = normal(6, 3, 5, 5) / np.sqrt(75.0)
b = normal(6)
y = jax.jit(conv)(x, w, b)  # jax.jit: traced once, compiled by XLA into one program
print("output:", y.shape, "parameters:", w.size + b.size)
assert y.shape == (1, 6, 28, 28)
assert w.size + b.size == 6 * (5 * 5 * 3) + 6 == 456

# %% [markdown]
# Padding 2 keeps the size (32), a stride of 2 gives (32 - 5)/2 + 1 = 14.5, rounded down to
# 14, and a dilation of 2 spreads the 5 taps over 9 cells (24 outputs).
# `jaxconv.padding_pairs` shows what a padding string means in cells:

# %%
print("SAME:", jaxconv.padding_pairs("SAME", (32, 32), (5, 5)))
print("FULL:", jaxconv.padding_pairs("FULL", (32, 32), (5, 5)))
assert jaxconv.conv_output_shape((32, 32), (5, 5), 2) == (14, 14)
assert jaxconv.padding_pairs("SAME", (32, 32), (5, 5)) == ((2, 2), (2, 2))
assert jaxconv.padding_pairs("FULL", (32, 32), (5, 5)) == ((4, 4), (4, 4))

# %% [markdown]
# ## 2. The forward pass as loops
#
# Output `(o, i, j)` is the dot product of filter `o` with the 5x5x3 patch of the image
# whose corner is at `(i, j)`, plus the bias:
#
# $$Y[o, i, j] = b[o] + \sum_{c, a, b'} X[c, i + a, j + b'] \, W[o, c, a, b']$$
#
# `jaxconv.reference.conv` is exactly these loops (NumPy, float64); `conv` (that is,
# `jaxconv.conv(..., method="direct")`) hands the same sum to XLA.

# %%
o, i, j = 4, 10, 17
xn, wn, bn = np.asarray(x), np.asarray(w), np.asarray(b)
by_hand = bn[o] + np.sum(xn[0, :, i : i + 5, j : j + 5] * wn[o])
check("one output, by hand", y[0, o, i, j], by_hand)
check("jaxconv.conv vs the loops of jaxconv.reference.conv", y, ref.conv(x, w, b))

# %% [markdown]
# ## 3. Cross-correlation versus true convolution
#
# The lecture writes the layer as a *true convolution*, in which the kernel index runs
# against the image index:
#
# $$Y[i, j] = \sum_{a, b} X[i - a, j - b] \, W[a, b]$$
#
# What section 2 computed -- and what every deep-learning library calls "convolution" -- is
# the *cross-correlation* `Y[i, j] = sum X[i + a, j + b] W[a, b]`: the kernel slides over the
# image unrotated. Substituting `a -> F - 1 - a` turns one into the other, so the two differ
# only by a 180-degree rotation of the kernel, which a network learning `W` does not care
# about. `flip=True` asks `jaxconv.conv` for the true convolution.
#
# In one dimension NumPy has both (`np.correlate`, `np.convolve`). With `x = [1, 2, 3, 4, 5]`
# and `w = [1, 2, 3]`, the correlation's first output is `1*1 + 2*2 + 3*3 = 14`, the
# convolution's `1*3 + 2*2 + 3*1 = 10`:

# %%
x1d = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
w1d = np.array([1.0, 2.0, 3.0])
as_ncw = partial(jnp.asarray, dtype=jnp.float32)
corr = conv(as_ncw(x1d[None, None]), as_ncw(w1d[None, None]))[0, 0]
true = conv(as_ncw(x1d[None, None]), as_ncw(w1d[None, None]), flip=True)[0, 0]
print("cross-correlation:", corr, " true convolution:", true)
check("cross-correlation = np.correlate", corr, np.correlate(x1d, w1d, mode="valid"))
check("flip=True = np.convolve (valid)", true, np.convolve(x1d, w1d, mode="valid"))
assert corr[0] == 14.0 and true[0] == 10.0
full = conv(as_ncw(x1d[None, None]), as_ncw(w1d[None, None]), padding="FULL", flip=True)[0, 0]
check("flip=True, padding FULL = np.convolve (full)", full, np.convolve(x1d, w1d, mode="full"))

# %% [markdown]
# In two dimensions, the lecture's formula as loops -- `Y[i, j] = sum X[i - a, j - b] W[a, b]`
# over every `(i, j)` where the kernel overlaps the image at all (the "full" convolution) --
# against `flip=True` with `padding="FULL"`, against the plain cross-correlation with a
# kernel rotated by hand, and against the loops of `jaxconv.reference`:

# %%
x_small = normal(1, 1, 6, 6)
w_num = jnp.arange(1.0, 10.0).reshape(1, 1, 3, 3)  # an asymmetric kernel: 1..9


def true_convolution_full(x2, w2):
    """The lecture's formula, literally: Y[i, j] = sum_{a, b} X[i - a, j - b] W[a, b]."""
    (h, wd), (f, g) = x2.shape, w2.shape
    out = np.zeros((h + f - 1, wd + g - 1))
    for i, j, a, b_ in np.ndindex(*out.shape, f, g):
        if 0 <= i - a < h and 0 <= j - b_ < wd:
            out[i, j] += x2[i - a, j - b_] * w2[a, b_]
    return out


lecture = true_convolution_full(np.asarray(x_small)[0, 0], np.asarray(w_num)[0, 0])
w_rot = jnp.flip(w_num, axis=(2, 3))  # the kernel turned by 180 degrees
check(
    "flip=True, FULL = the lecture's loops",
    conv(x_small, w_num, padding="FULL", flip=True)[0, 0],
    lecture,
)
check("correlation with the rotated kernel", conv(x_small, w_rot, padding="FULL")[0, 0], lecture)
check(
    "jaxconv.reference.conv(flip=True)",
    ref.conv(x_small, w_num, padding="FULL", flip=True)[0, 0],
    lecture,
)
assert not np.allclose(conv(x_small, w_num, padding="FULL")[0, 0], lecture)  # they do differ

# %% [markdown]
# The rotation, drawn: the true convolution slides the right-hand kernel over the image
# exactly as the cross-correlation slides the left-hand one.

# %%
fig, axes = plt.subplots(1, 2, figsize=(5.5, 2.8))
for ax, kernel, title in [
    (axes[0], w_num[0, 0], "W (what a correlation slides)"),
    (axes[1], w_rot[0, 0], "W turned 180° (flip=True)"),
]:
    ax.imshow(np.asarray(kernel), cmap="viridis")
    for (r, c), v in np.ndenumerate(np.asarray(kernel)):
        ax.text(c, r, f"{v:.0f}", ha="center", va="center", color="w", fontsize=12)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 4. The weight gradient is a convolution of X with dL/dY
#
# Backpropagation hands the layer `dY = dL/dY`, one number per output (here a random
# upstream gradient: think of the loss `L = sum(Y * dY)`). Every weight `W[o, c, a, b']`
# touched *every* output of map `o`, so the chain rule sums over all of them:
#
# $$\frac{\partial L}{\partial W[o, c, a, b']} = \sum_{i, j} dY[o, i, j] \, X[c, i + a, j + b']$$
#
# That is `dY` (28x28) slid over `X` (32x32) as if it were the filter: a 5x5 result, one for
# each pair `(o, c)`. To have `jaxconv.conv` compute it, let the input channels play the
# batch (`X` as `(3, 1, 32, 32)`) and the output channels play the filters (`dY` as
# `(6, 1, 28, 28)`); the batch axis `N` becomes the summed-over channel axis. The bias
# gradient is the sum of `dY` over everything but the output channel.

# %%
dy = normal(*y.shape)


def loss(x, w, b):
    return jnp.sum(conv(x, w, b) * dy)


@jax.jit
def weight_grad_as_conv(x, dy):
    # Channels become the batch, the batch becomes the (summed) channel axis.
    dw = conv(x.transpose(1, 0, 2, 3), dy.transpose(1, 0, 2, 3))  # (C_in, C_out, 5, 5)
    return dw.transpose(1, 0, 2, 3)


dx_auto, dw_auto, db_auto = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(x, w, b)
dw_as_conv = weight_grad_as_conv(x, dy)
print("dW:", dw_as_conv.shape)

check("dW as conv(X, dY)", dw_as_conv, dw_auto)
check("jaxconv.conv_weight_grad", jaxconv.conv_weight_grad(x, dy, w.shape), dw_auto)
check("jaxconv.reference.conv_weight_grad (loops)", ref.conv_weight_grad(x, dy, w.shape), dw_auto)
check("db = sum of dY over batch and space", dy.sum(axis=(0, 2, 3)), db_auto)

# %% [markdown]
# ## 5. The input gradient is a full correlation with the flipped kernel
#
# An input pixel only influenced the outputs whose window covered it: with 5x5 windows,
# `X[c, p, q]` was read by output `(i, j)` through tap `(a, b') = (p - i, q - j)`:
#
# $$\frac{\partial L}{\partial X[c, p, q]} = \sum_{o, a, b'} dY[o, p-a, q-b'] \, W[o, c, a, b']$$
#
# (terms with `dY` indices off the 28x28 grid are zero). Read as a sliding window over `dY`,
# the tap index runs *backwards*: it is a correlation of `dY`, zero-padded by `F - 1 = 4` on
# every side (the "full" convolution), with the kernel rotated by 180 degrees -- and with
# its two channel axes swapped, since the gradient flows from the 6 output channels back to
# the 3 input channels.
#
# First in one dimension, small enough to do by hand: `x = [1, 2, 3, 4, 5]`,
# `w = [1, 0, -1]` and upstream gradient `dy = [1, 10, 100]`.

# %%
x1 = jnp.array([[[1.0, 2.0, 3.0, 4.0, 5.0]]])
w1 = jnp.array([[[1.0, 0.0, -1.0]]])
dy1 = jnp.array([[[1.0, 10.0, 100.0]]])
print("y  =", conv(x1, w1)[0, 0])  # [1-3, 2-4, 3-5]
# dx[q] = sum_i dy[i] w[q - i]:
#   dx[0] = 1*1 = 1, dx[1] = 1*0 + 10*1 = 10, dx[2] = 1*(-1) + 10*0 + 100*1 = 99,
#   dx[3] = 10*(-1) + 100*0 = -10, dx[4] = 100*(-1) = -100
by_hand = jnp.array([[[1.0, 10.0, 99.0, -10.0, -100.0]]])
full = conv(dy1, jnp.flip(w1, axis=2), padding="FULL")  # [0 0 1 10 100 0 0] . [-1 0 1]
print("dx =", full[0, 0])
check("1-D: full correlation with the flipped kernel", full, by_hand)
check("1-D: jaxconv.conv_input_grad", jaxconv.conv_input_grad(dy1, w1, x1.shape), by_hand)
check("1-D: jax.grad", jax.grad(lambda x: jnp.sum(conv(x, w1) * dy1))(x1), by_hand)


# %% [markdown]
# The same in the lecture's layer: flip the 5x5 filters by 180 degrees, swap `C_out` and
# `C_in`, and correlate with `dY` under `"FULL"` padding (4 on each side, so 28 + 8 - 5 + 1 =
# 32 comes back out). `flip=True` asks `jaxconv.conv` for the textbook convolution, which
# does the rotation itself.


# %%
@jax.jit
def input_grad_as_conv(dy, w):
    w_flipped_io = jnp.flip(w, axis=(2, 3)).transpose(1, 0, 2, 3)  # (C_in, C_out, 5, 5)
    return conv(dy, w_flipped_io, padding="FULL")


@jax.jit
def input_grad_as_true_conv(dy, w):
    return conv(dy, w.transpose(1, 0, 2, 3), padding="FULL", flip=True)


dx_as_conv = input_grad_as_conv(dy, w)
print("dX:", dx_as_conv.shape)

check("dX as full conv(dY, flipped & IO-swapped W)", dx_as_conv, dx_auto)
check("jaxconv.conv_input_grad", jaxconv.conv_input_grad(dy, w, x.shape), dx_as_conv)
check("true convolution: flip=True, padding FULL", input_grad_as_true_conv(dy, w), dx_as_conv)
check("jaxconv.reference.conv_input_grad (loops)", ref.conv_input_grad(dy, w, x.shape), dx_auto)

# %% [markdown]
# ### The region one input pixel touched
#
# Take the pixel `(p, q) = (12, 7)`. It sat under the windows of the outputs `(i, j)` with
# `p - 4 <= i <= p` and `q - 4 <= j <= q`: a 5x5 block of each output map. Because `conv` is
# linear in `X`, feeding it an image that is 1 at `(p, q)` and 0 elsewhere lights up
# exactly those outputs -- the library's own answer to "which outputs did this pixel touch?".
# Its gradient is that block of `dY`, multiplied cell by cell with the kernel turned by 180
# degrees (the block's top-left output used the kernel's bottom-right tap) and summed.
# A corner pixel was read by one window only, so its gradient has one term per filter:
# border pixels get smaller gradients.

# %%
p, q = 12, 7
one_hot = jnp.zeros((1, 1, 32, 32)).at[0, 0, p, q].set(1.0)
touched = np.asarray(conv(one_hot, jnp.ones((1, 1, 5, 5))))[0, 0] != 0
rows, cols = np.nonzero(touched)
print(
    "outputs touched: rows", rows.min(), "to", rows.max(), "columns", cols.min(), "to", cols.max()
)
assert touched.sum() == 25
assert (rows.min(), rows.max(), cols.min(), cols.max()) == (p - 4, p, q - 4, q)

dyn = np.asarray(dy)
region = dyn[0, :, p - 4 : p + 1, q - 4 : q + 1]  # (6, 5, 5): the outputs X[c, p, q] fed
w_turned = wn[:, :, ::-1, ::-1]  # (6, 3, 5, 5), rotated 180 degrees
for c in range(3):
    check(
        f"dX[{c}, p, q] = sum(dY block * turned W)",
        dx_auto[0, c, p, q],
        np.sum(region * w_turned[:, c]),
    )
check(
    "corner: dX[c, 0, 0] = sum_o dY[o, 0, 0] W[o, c, 0, 0]",
    dx_auto[0, :, 0, 0],
    np.einsum("o,oc->c", dyn[0, :, 0, 0], wn[:, :, 0, 0]),
)

# %%
fig, axes = plt.subplots(1, 4, figsize=(12, 3.2))
heat(axes[0], xn[0, 0], f"X[0]: pixel ({p}, {q}) marked")
axes[0].add_patch(Rectangle((q - 0.5, p - 0.5), 1, 1, fill=False, ec="k", lw=2))
heat(axes[1], dyn[0, 0], "dL/dY[0]: the 5x5 block it touched")
axes[1].add_patch(Rectangle((q - 4.5, p - 4.5), 5, 5, fill=False, ec="k", lw=2))
heat(axes[2], region[0], "that block of dL/dY[0]")
heat(axes[3], w_turned[0, 0], "W[0, 0] turned 180°")
fig.tight_layout()
plt.show()

# %% [markdown]
# ### The five arrays
#
# Channel 0 of the image, filter 0 on channel 0, the upstream gradient of map 0, and the
# two gradients backpropagation returns: `dL/dW` has the kernel's shape (each weight summed
# over all 28x28 outputs), `dL/dX` the image's. The border of `dL/dX` is paler: fewer
# windows covered it.

# %%
fig, axes = plt.subplots(1, 5, figsize=(14, 3.2))
for ax, a, title in zip(
    axes,
    [xn[0, 0], wn[0, 0], dyn[0, 0], np.asarray(dw_auto)[0, 0], np.asarray(dx_auto)[0, 0]],
    ["X[0] (32x32)", "W[0, 0] (5x5)", "dL/dY[0] (28x28)", "dL/dW[0, 0] (5x5)", "dL/dX[0] (32x32)"],
    strict=True,
):
    heat(ax, a, title)
fig.tight_layout()
plt.show()

# The border claim, as a number: mean |dL/dX| on the one-pixel frame vs. the interior.
dxa = np.abs(np.asarray(dx_auto))
frame = np.ones((32, 32), bool)
frame[1:-1, 1:-1] = False
print(
    f"mean |dL/dX| on the frame {dxa[..., frame].mean():.3f}, inside {dxa[..., ~frame].mean():.3f}"
)
assert dxa[..., frame].mean() < dxa[..., ~frame].mean()

# %% [markdown]
# ## 6. Agreement with `jax.grad`
#
# `jaxconv.conv` registers the two hand-derived rules above as its VJP (`jax.custom_vjp`);
# `jax.lax.conv_general_dilated` lets JAX derive its gradient automatically. In a small
# two-layer network with a ReLU and a stride-2 layer, the two give the same gradients:

# %%
x_net = normal(4, 3, 16, 16)
target = normal(4, 8, 8, 8)
w1_net, w2_net = normal(8, 3, 3, 3) / 5.0, normal(8, 8, 3, 3) / 8.0


def lax_conv(x, w, stride=1, padding=1):
    return lax.conv_general_dilated(x, w, (stride, stride), [(padding, padding)] * 2)


def network_loss(conv_fn, x, w1, w2):
    hidden = jax.nn.relu(conv_fn(x, w1, padding=1))
    out = conv_fn(hidden, w2, stride=2, padding=1)
    return jnp.mean((out - target) ** 2)


def ours(x, w1, w2):
    return network_loss(conv, x, w1, w2)


def theirs(x, w1, w2):
    return network_loss(lax_conv, x, w1, w2)


grads_ours = jax.jit(jax.grad(ours, argnums=(0, 1, 2)))(x_net, w1_net, w2_net)
grads_lax = jax.jit(jax.grad(theirs, argnums=(0, 1, 2)))(x_net, w1_net, w2_net)
for name, g_ours, g_lax in zip(["dL/dx", "dL/dw1", "dL/dw2"], grads_ours, grads_lax, strict=True):
    check(f"{name}: jaxconv vs jax.grad of lax", g_ours, g_lax)

# %% [markdown]
# ## 7. A second derivative
#
# The backward rules are themselves convolutions, which JAX can differentiate, so
# derivatives of derivatives work: `jax.hessian` (forward-over-reverse) and Hessian-vector
# products (`jax.jvp` of `jax.grad`). (`jax.jvp` applied to `conv` *itself* is refused, as
# for every `jax.custom_vjp` function -- differentiate its gradient instead.)
#
# For `f(W) = 1/2 * sum(conv(X, W)**2)` the Hessian has a closed form. Write each output as
# `Y = P @ W`, where the rows of `P` are the input patches (the "im2col" matrix); then
# `f = 1/2 |P W|^2` and its Hessian is `P^T P`, the Gram matrix of the patches.

# %%
x_h = normal(1, 1, 6, 6)
w_h = normal(1, 1, 3, 3)


def f(w):
    return 0.5 * jnp.sum(conv(x_h, w) ** 2)


hessian = jax.jit(jax.hessian(f))(w_h).reshape(9, 9)
xh = np.asarray(x_h)[0, 0]
patches = np.stack([xh[i : i + 3, j : j + 3].ravel() for i in range(4) for j in range(4)])
check("jax.hessian of 1/2|conv(X, W)|^2 = P^T P", hessian, patches.T @ patches)

# %% [markdown]
# And a Hessian-vector product of the network's loss, forward-over-reverse, against the
# `lax` network:

# %%
v = (normal(*w1_net.shape), normal(*w2_net.shape))


def hvp(loss_fn):
    def grad_w(w1, w2):
        return jax.grad(loss_fn, argnums=(1, 2))(x_net, w1, w2)

    return jax.jit(lambda w1, w2: jax.jvp(grad_w, (w1, w2), v)[1])(w1_net, w2_net)


for name, h_ours, h_lax in zip(["H v (w1)", "H v (w2)"], hvp(ours), hvp(theirs), strict=True):
    check(f"{name}: jaxconv vs lax", h_ours, h_lax)

# %% [markdown]
# ## Summary
#
# | quantity | is a convolution of | with |
# | --- | --- | --- |
# | `Y` | `X` | `W` (cross-correlation; `flip=True` turns `W` for a true convolution) |
# | `dL/dW` | `X` | `dY` -- every weight touched every output |
# | `dL/dX` | `dY`, padded "full" | `W` turned 180°, channels swapped -- only covering windows |
# | `dL/db` | -- | sum of `dY` over batch and space |
#
# These are the functions `jaxconv.conv_weight_grad` and `jaxconv.conv_input_grad`, and
# exactly what `jaxconv.conv` runs in its backward pass. The next notebook does the same for
# pooling; the third adds stride, padding, dilation and groups to this table.
