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
# # 5. Training a small CNN with `jaxconv`
#
# Everything from the first four notebooks, used for what it is for: a small convolutional
# network -- conv, max pool, conv, average pool, dense -- trained on scikit-learn's bundled
# 8x8 handwritten digits (1,797 images, no download) with `optax`. The same network is
# trained a second time with `jax.lax` ops, whose gradients JAX derives automatically; the
# two loss curves must agree. Then a look at the predictions, at the learned filters, and at
# where the time of one training step goes.
#
# The whole model is in this notebook, in plain JAX: parameters are a dict of arrays, the
# layers are functions.

# %%
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from jax import lax
from sklearn.datasets import load_digits

import jaxconv

digits = load_digits()
images = (digits.images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8), values in [0, 1]
labels = digits.target.astype(np.int32)
order = np.random.default_rng(0).permutation(len(images))
train_idx, test_idx = order[:1437], order[1437:]  # 80 % to train on, 20 % held out
x_test, y_test = images[test_idx], labels[test_idx]
print("train", len(train_idx), "test", len(test_idx), "image", images.shape[1:])
assert images.shape == (1797, 1, 8, 8) and sorted(set(labels)) == list(range(10))

# %% [markdown]
# ## 1. The model, twice
#
# The layers, with their shapes for a batch of `B` images:
#
# | layer | output |
# | --- | --- |
# | conv 3x3, 1 -> 8 channels, padding 1, ReLU | `(B, 8, 8, 8)` |
# | max pool 2x2 | `(B, 8, 4, 4)` |
# | conv 3x3, 8 -> 16 channels, padding 1, ReLU | `(B, 16, 4, 4)` |
# | average pool 2x2 | `(B, 16, 2, 2)` |
# | dense 64 -> 10 | `(B, 10)` logits |
#
# The network is written once, over a dict of layer functions, so the `jaxconv` model and
# the `lax` model are the same code with different ops. The convolutions ask for
# `method="direct"`: the same XLA convolution `lax` runs, so the two runs do the same
# arithmetic in the forward pass and any difference comes from the backward rules -- what
# this comparison is about. (`method="auto"` may pick the FFT, which rounds differently,
# and training amplifies even float32-sized differences step after step.)

# %%
JAXCONV_OPS = {
    "conv": lambda x, w, b: jaxconv.conv(x, w, b, padding=1, method="direct"),
    "max_pool": lambda x: jaxconv.max_pool(x, 2),
    "avg_pool": lambda x: jaxconv.avg_pool(x, 2),
}
LAX_OPS = {
    "conv": lambda x, w, b: (
        lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1))) + b[None, :, None, None]
    ),
    "max_pool": lambda x: lax.reduce_window(
        x, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID"
    ),
    "avg_pool": lambda x: (
        lax.reduce_window(x, 0.0, lax.add, (1, 1, 2, 2), (1, 1, 2, 2), "VALID") / 4
    ),
}


def init_params(seed):
    """He-normal weights (std sqrt(2 / fan_in)) and zero biases, as float32 arrays."""
    rng = np.random.default_rng(seed)

    def he(*shape):
        fan_in = np.prod(shape[1:]) if len(shape) == 4 else shape[0]
        return jnp.asarray(rng.standard_normal(shape) * np.sqrt(2.0 / fan_in), jnp.float32)

    return {
        "w1": he(8, 1, 3, 3),
        "b1": jnp.zeros(8),
        "w2": he(16, 8, 3, 3),
        "b2": jnp.zeros(16),
        "wd": he(64, 10),
        "bd": jnp.zeros(10),
    }


def model(ops, params, x):
    h = ops["max_pool"](jax.nn.relu(ops["conv"](x, params["w1"], params["b1"])))
    h = ops["avg_pool"](jax.nn.relu(ops["conv"](h, params["w2"], params["b2"])))
    return h.reshape(len(x), -1) @ params["wd"] + params["bd"][None, :]


def loss_fn(ops, params, x, y):
    logits = model(ops, params, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


params0 = init_params(0)
print({name: p.shape for name, p in params0.items()})


# %% [markdown]
# ## 2. Training
#
# Adam with learning rate 0.01, minibatches of 64, ten passes over the training set; the
# same shuffles for both runs. `train_step` is jitted: JAX traces the whole step -- forward,
# the hand-derived backward rules, the optimiser update -- once and compiles it.

# %%
optimizer = optax.adam(1e-2)
EPOCHS, BATCH = 10, 64


def train(ops):
    @jax.jit
    def train_step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn, argnums=1)(ops, params, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    params = init_params(0)
    opt_state = optimizer.init(params)
    shuffle = np.random.default_rng(1)
    losses = []
    for _ in range(EPOCHS):
        epoch = shuffle.permutation(train_idx)
        for start in range(0, len(epoch) - BATCH + 1, BATCH):
            idx = epoch[start : start + BATCH]
            params, opt_state, loss = train_step(params, opt_state, images[idx], labels[idx])
            losses.append(float(loss))
    return params, np.array(losses)


def accuracy(ops, params):
    predictions = jnp.argmax(model(ops, params, x_test), axis=-1)
    return float(jnp.mean(predictions == y_test)), np.asarray(predictions)


t0 = time.perf_counter()
params, losses = train(JAXCONV_OPS)
print(f"jaxconv: {len(losses)} steps in {time.perf_counter() - t0:.1f} s (compilation included)")
params_lax, losses_lax = train(LAX_OPS)
acc, predictions = accuracy(JAXCONV_OPS, params)
acc_lax, _ = accuracy(LAX_OPS, params_lax)
print(f"test accuracy: jaxconv {acc:.1%}, lax {acc_lax:.1%}")
print(f"final epoch's mean loss: {losses[-22:].mean():.4f} (from {losses[0]:.4f})")

difference = np.abs(losses - losses_lax) / np.abs(losses_lax)
print(f"largest relative difference over the first 40 steps: {difference[:40].max():.1e}")
final, final_lax = losses[-22:].mean(), losses_lax[-22:].mean()
print(f"final epoch's mean loss: jaxconv {final:.4f}, lax {final_lax:.4f}")
assert difference[:40].max() <= 1e-5  # float32 rounding, step for step
assert acc >= 0.95 and abs(acc - acc_lax) <= 0.02
assert losses[-22:].mean() < 0.1 * losses[:22].mean()
assert abs(final - final_lax) <= 0.5 * final_lax

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
axes[0].plot(losses, label="jaxconv", lw=2.5, alpha=0.6)
axes[0].plot(losses_lax, label="lax", lw=1, color="k", ls="--")
axes[0].set_yscale("log")
axes[0].set_xlabel("training step")
axes[0].set_ylabel("cross-entropy (minibatch)")
axes[0].set_title("loss curves: jaxconv and lax on top of each other", fontsize=10)
axes[0].legend()
axes[1].semilogy(np.maximum(difference, 1e-10), ".", ms=3)
axes[1].axhline(np.finfo(np.float32).eps, color="r", ls=":", label="float32 epsilon")
axes[1].set_xlabel("training step")
axes[1].set_title("|jaxconv - lax| / lax, per step (1e-10 = identical)", fontsize=10)
axes[1].legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 3. What the network learned
#
# Test digits it never saw during training, with its prediction (red where it is wrong):

# %%
fig, axes = plt.subplots(3, 10, figsize=(11, 3.9))
for ax, i in zip(axes.flat, range(30), strict=True):
    ax.imshow(x_test[i, 0], cmap="gray_r")
    ok = predictions[i] == y_test[i]
    ax.set_title(
        f"{predictions[i]}" + ("" if ok else f" (is {y_test[i]})"),
        color="k" if ok else "r",
        fontsize=10,
    )
    ax.axis("off")
fig.suptitle(f"test digits and predictions: {acc:.1%} of {len(y_test)} correct", fontsize=11)
fig.tight_layout()
plt.show()
wrong = np.flatnonzero(predictions != y_test)
assert len(wrong) == round((1 - acc) * len(y_test))

# %% [markdown]
# The eight first-layer filters: each is a 3x3 pattern the network slides over the image,
# learned from random starting values (red positive, blue negative weights).

# %%
w1 = np.asarray(params["w1"])[:, 0]
fig, axes = plt.subplots(1, 8, figsize=(11, 1.8))
lim = np.abs(w1).max()
for o, ax in enumerate(axes):
    ax.imshow(w1[o], cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_title(f"filter {o}", fontsize=9)
    ax.axis("off")
fig.tight_layout()
plt.show()
assert not np.allclose(w1, np.asarray(params0["w1"])[:, 0], atol=1e-2)  # they did move

# %% [markdown]
# ## 4. Where the time of a training step goes
#
# Each layer's forward and backward, jitted on its own at the training batch's shapes,
# with `jaxconv` ops and with `lax` ops. At these tiny sizes every number is a fraction of
# a millisecond; they are measured once, on whatever machine runs this notebook, and
# nothing is asserted about them -- only that both give the same gradient.

# %%
rng = np.random.default_rng(2)
shapes = {  # each layer's input at batch 64
    "conv1": (64, 1, 8, 8),
    "max_pool": (64, 8, 8, 8),
    "conv2": (64, 8, 4, 4),
    "avg_pool": (64, 16, 4, 4),
}
layers = {
    "conv1": lambda ops, x: ops["conv"](x, params["w1"], params["b1"]),
    "max_pool": lambda ops, x: ops["max_pool"](x),
    "conv2": lambda ops, x: ops["conv"](x, params["w2"], params["b2"]),
    "avg_pool": lambda ops, x: ops["avg_pool"](x),
}


def layer_time(ops, layer, x, repeats=20):
    step = jax.jit(jax.grad(lambda x: jnp.sum(layer(ops, x) ** 2)))
    jax.block_until_ready(step(x))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(step(x))
        times.append(time.perf_counter() - t0)
    return min(times), step(x)


per_layer = {"jaxconv": {}, "lax": {}}
for name, shape in shapes.items():
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    (t_ours, g1), (t_lax, g2) = (layer_time(ops, layers[name], x) for ops in (JAXCONV_OPS, LAX_OPS))
    per_layer["jaxconv"][name], per_layer["lax"][name] = t_ours, t_lax
    assert jnp.allclose(g1, g2, rtol=1e-5, atol=1e-6), name  # same gradient, whatever the time
    print(f"{name:>9}: jaxconv {t_ours * 1e6:7.1f} us, lax {t_lax * 1e6:7.1f} us")

# %%
fig, ax = plt.subplots(figsize=(7, 3))
pos = np.arange(len(shapes))
for k, (impl, t) in enumerate(per_layer.items()):
    ax.bar(pos + (k - 0.5) * 0.38, [t[n] * 1e6 for n in shapes], width=0.38, label=impl)
ax.set_xticks(pos, list(shapes))
ax.set_ylabel("forward + backward (us)")
ax.set_title("one layer of the train step, batch 64 (one measurement)", fontsize=10)
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Summary
#
# A CNN built from `jaxconv.conv`, `jaxconv.max_pool` and `jaxconv.avg_pool` trains like
# any JAX model -- `jax.value_and_grad`, `jax.jit`, `optax` -- and its loss curve is the
# `lax` model's to float32 precision, step for step, for as long as float32 rounding stays
# rounding: the hand-derived backward rules of the first three notebooks are the gradients
# JAX would have computed. (The two programs add some numbers in a different order -- the
# average pool's four window entries, say -- so they differ in the last bit here and there;
# Adam feeds those bits back, and after about a hundred steps the two runs have drifted
# apart by a few percent, to equally good networks. Two `lax` runs compiled differently
# would drift the same way.)
