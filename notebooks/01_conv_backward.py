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
# # Backpropagation through a convolution
#
# The lecture on convolutional layers, worked through with `jaxconv`: the output size of a
# layer, the forward pass as loops, and the two gradients backpropagation needs -- with
# respect to the weights and with respect to the input -- each of which turns out to be a
# convolution itself. Then stride and dilation, agreement with `jax.grad`, and a second
# derivative.
#
# Every claim below is checked by an assertion, so this notebook is also a test
# (`tests/test_notebooks.py` runs it). Conventions: `jaxconv` is channels-first like
# PyTorch -- images are `(N, C, H, W)`, filters `(C_out, C_in, F, F)` -- and, like every
# deep-learning framework, it computes a *cross-correlation* unless asked to flip the kernel.

# %%
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

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

x = normal(1, 3, 32, 32)  # one 32x32 RGB image
w = normal(6, 3, 5, 5) / np.sqrt(75.0)  # six 5x5x3 filters
b = normal(6)  # one bias per filter
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
# ## 3. The weight gradient is a convolution of X with dL/dY
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
# ## 4. The input gradient is a full correlation with the flipped kernel
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
# ## 5. Stride and dilation
#
# **Stride.** With stride `S`, output `i` reads input `S*i + a`. Insert `S - 1` zeros
# between the entries of `dY` ("dilate" it) and every entry lands back on the input
# position its window started at: the stride-1 recipe then applies unchanged. If the stride
# did not divide `W1 - F`, the last rows and columns of `X` never entered a window and get a
# zero gradient (below: a 10x10 input, 3x3 kernel, stride 2 -> 4x4 output, and the full
# correlation returns 9x9, so one zero row and column are appended).
#
# For the weights, the forward's stride becomes a *dilation* of `dY` in the weight-gradient
# convolution: `dW[a] = sum_i dY[i] X[S*i + a]`.

# %%
xs = normal(2, 3, 10, 10)
ws = normal(4, 3, 3, 3)
dys = normal(2, 4, 4, 4)
assert jaxconv.conv_output_shape(xs.shape[2:], ws.shape[2:], stride=2) == dys.shape[2:]

@jax.jit
def input_grad_stride2(dy, w):
    zero = jnp.zeros((), dy.dtype)
    dy_dilated = lax.pad(dy, zero, [(0, 0, 0), (0, 0, 0), (0, 0, 1), (0, 0, 1)])  # (2, 4, 7, 7)
    dx = conv(dy_dilated, jnp.flip(w, axis=(2, 3)).transpose(1, 0, 2, 3), padding="FULL")
    print("full correlation of the dilated dY:", dx.shape)  # runs once, while tracing
    return jnp.pad(dx, [(0, 0), (0, 0), (0, 1), (0, 1)])  # row/column 9 never entered a window


@jax.jit
def weight_grad_stride2(x, dy):
    dw = conv(x.transpose(1, 0, 2, 3), dy.transpose(1, 0, 2, 3), dilation=2)
    return dw.transpose(1, 0, 2, 3)[:, :, :3, :3]  # the taps past the kernel are not weights


dx_s, dw_s = input_grad_stride2(dys, ws), weight_grad_stride2(xs, dys)


def loss_s(x, w):
    return jnp.sum(conv(x, w, stride=2) * dys)


dx_s_auto, dw_s_auto = jax.jit(jax.grad(loss_s, argnums=(0, 1)))(xs, ws)
check("stride 2: dX from the dilated dY", dx_s, dx_s_auto)
check("stride 2: dW with dY dilated by the stride", dw_s, dw_s_auto)
assert not np.asarray(dx_s_auto)[..., 9, :].any()  # never read: zero gradient

# %% [markdown]
# **Dilation.** A kernel with dilation `D` reads `X[i + D*a]`: its taps are `D` apart. The
# input gradient is the full correlation with the flipped kernel, dilated the same way (the
# "full" padding is `D(F - 1)` per side); for the weight gradient the roles swap once more
# and the forward's dilation becomes the *stride* of the correlation of `X` with `dY`.

# %%
xd = normal(2, 3, 9, 9)
wd = normal(4, 3, 3, 3)
dyd = normal(2, 4, 5, 5)  # 9 - 2*(3 - 1) = 5
@jax.jit
def input_grad_dilation2(dy, w):
    return conv(dy, jnp.flip(w, axis=(2, 3)).transpose(1, 0, 2, 3), padding="FULL",
                        dilation=2)


@jax.jit
def weight_grad_dilation2(x, dy):
    return conv(x.transpose(1, 0, 2, 3), dy.transpose(1, 0, 2, 3), stride=2).transpose(
        1, 0, 2, 3
    )


dx_d, dw_d = input_grad_dilation2(dyd, wd), weight_grad_dilation2(xd, dyd)


def loss_d(x, w):
    return jnp.sum(conv(x, w, dilation=2) * dyd)


dx_d_auto, dw_d_auto = jax.jit(jax.grad(loss_d, argnums=(0, 1)))(xd, wd)
check("dilation 2: dX, full correlation with the dilated kernel", dx_d, dx_d_auto)
check("dilation 2: dW, stride 2 over X", dw_d, dw_d_auto)

# %% [markdown]
# The public gradient functions take the same arguments as `conv` and handle every
# combination -- asymmetric padding and groups too. Their configuration (shapes, stride,
# padding, ...) is static: under `jax.jit` it is marked so. Against the reference loops:

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
    out = jaxconv.conv_output_shape(xc.shape[2:], wc.shape[2:], cfg["stride"], cfg["padding"],
                                    cfg["dilation"])
    dyc = normal(2, 3, *out)
    check(f"conv_input_grad  {cfg}", input_grad(dyc, wc, xc.shape, **cfg),
          ref.conv_input_grad(dyc, wc, xc.shape, **cfg))
    check(f"conv_weight_grad {cfg}", weight_grad(xc, dyc, wc.shape, **cfg),
          ref.conv_weight_grad(xc, dyc, wc.shape, **cfg))

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
# | `Y` | `X` | `W` (padding `P`, stride `S`, dilation `D`) |
# | `dL/dW` | `X` | `dY` dilated by `S`; output stride `D` |
# | `dL/dX` | `dY` dilated by `S`, padded "full" | `W` turned 180°, channels swapped; dilation `D` |
# | `dL/db` | -- | sum of `dY` over batch and space |
#
# These are the functions `jaxconv.conv_weight_grad` and `jaxconv.conv_input_grad`, and
# exactly what `jaxconv.conv` runs in its backward pass.
