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
# # 2. Backpropagation through pooling
#
# A pooling layer has no parameters, so its backward pass only has to *route* the upstream
# gradient `dL/dY` back to the input. Max pooling sends each window's gradient to the one
# cell that won the window; average pooling splits it equally over the window. This
# notebook draws the lecture's 4x4 example, then looks at the points where the maximum is
# not differentiable (ties and NaNs) and at what the backward pass has to remember.
#
# Every claim is an assertion (`tests/test_notebooks.py` runs this notebook), checked three
# ways: by hand, against the loops of `jaxconv.reference`, and with `jax.grad`.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from jax import lax

import jaxconv
import jaxconv.reference as ref


def check(name, actual, expected, tol=1e-6):
    """Assert two arrays agree (NaN where NaN) and say so."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (name, actual.shape, expected.shape)
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=0, err_msg=name)
    print(f"{name:<58} OK")


def grid(ax, a, title, highlight=None, window=None, fmt="{:g}"):
    """Draw a 2-D array as a table of numbers; shade `highlight` cells, rule off windows."""
    a = np.asarray(a)
    shade = np.zeros(a.shape) if highlight is None else np.asarray(highlight, float)
    ax.imshow(shade, cmap="Oranges", vmin=0, vmax=1.6)
    for (r, c), v in np.ndenumerate(a):
        ax.text(c, r, fmt.format(v), ha="center", va="center", fontsize=12)
    ax.set_xticks(np.arange(a.shape[1] + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(a.shape[0] + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="0.6", lw=0.5)
    if window:  # thick lines between pooling windows
        for k in range(0, a.shape[0] + 1, window):
            ax.axhline(k - 0.5, color="k", lw=2)
        for k in range(0, a.shape[1] + 1, window):
            ax.axvline(k - 0.5, color="k", lw=2)
    ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
    ax.set_title(title, fontsize=10)


def pool_vjp(pool, x, dy):
    """dL/dX for L = sum(pool(x) * dy), by jax.grad."""
    return jax.grad(lambda x: jnp.sum(pool(x) * dy))(x)


# %% [markdown]
# ## 1. Max pooling: the gradient goes to the winner
#
# The lecture's input, 2x2 windows with stride 2. The four windows hold {1, 1, 5, 6},
# {2, 4, 7, 8}, {3, 2, 1, 2} and {1, 0, 3, 4}, so the output is 6, 8, 3, 4.
#
# In the forward pass only the maximum of a window reached the output: nudging any other
# cell by a little does not change `Y` at all, and nudging the winner changes its output by
# the same amount. So `dL/dX` is zero everywhere except at the four winners, each of which
# receives its window's upstream gradient unchanged. With upstream gradient
# `dY = [[10, 20], [30, 40]]`:

# %%
x = jnp.array(
    [[1.0, 1.0, 2.0, 4.0], [5.0, 6.0, 7.0, 8.0], [3.0, 2.0, 1.0, 0.0], [1.0, 2.0, 3.0, 4.0]]
)
x = x[None, None]  # (N, C, H, W) = (1, 1, 4, 4)
dy = jnp.array([[[[10.0, 20.0], [30.0, 40.0]]]])

y, indices = jaxconv.max_pool(x, 2, return_indices=True)
print("Y =", y[0, 0].tolist(), " winners (flat index into the 4x4 plane):", indices[0, 0].tolist())
check("max_pool: 6, 8, 3, 4", y[0, 0], [[6.0, 8.0], [3.0, 4.0]])
assert indices[0, 0].tolist() == [[1 * 4 + 1, 1 * 4 + 3], [2 * 4 + 0, 3 * 4 + 3]]

by_hand = np.zeros((4, 4))
by_hand[1, 1], by_hand[1, 3], by_hand[2, 0], by_hand[3, 3] = 10, 20, 30, 40
dx_max = pool_vjp(lambda x: jaxconv.max_pool(x, 2), x, dy)
check("dL/dX by hand", dx_max[0, 0], by_hand)
check("jaxconv.reference.max_pool_grad (loops)", ref.max_pool_grad(x, dy, 2)[0, 0], by_hand)
lax_max = jax.grad(
    lambda x: jnp.sum(
        lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID") * dy
    )
)(x)
check("jax.grad of lax.reduce_window (JAX's own derivative)", dx_max, lax_max)

# %%
winners = np.zeros((4, 4))
winners.flat[np.asarray(indices).ravel()] = 1
fig, axes = plt.subplots(1, 4, figsize=(11, 3), gridspec_kw={"width_ratios": [2, 1, 1, 2]})
grid(axes[0], x[0, 0], "X: winners shaded", winners, window=2)
grid(axes[1], y[0, 0], "Y = max_pool(X, 2)", np.ones((2, 2)))
grid(axes[2], dy[0, 0], "upstream dL/dY")
grid(axes[3], dx_max[0, 0], "dL/dX: routed to the winners", winners, window=2)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 2. Average pooling: the gradient is split equally
#
# Each output of a 2x2 average is `(x1 + x2 + x3 + x4) / 4`, so every cell of the window
# receives a quarter of the window's upstream gradient -- no winners, nothing to remember
# from the forward pass but the shape.

# %%
dx_avg = pool_vjp(lambda x: jaxconv.avg_pool(x, 2), x, dy)
by_hand_avg = np.kron(np.asarray(dy[0, 0]), np.ones((2, 2))) / 4  # each dY copied to its window
check("avg_pool: Y is the window means", jaxconv.avg_pool(x, 2)[0, 0], [[3.25, 5.25], [2.0, 2.0]])
check("dL/dX = dY / 4 on every cell of its window", dx_avg[0, 0], by_hand_avg)
check("jaxconv.reference.avg_pool_grad (loops)", ref.avg_pool_grad(x, dy, 2)[0, 0], by_hand_avg)
# Both rules pass the whole gradient on: nothing is created or lost, only routed.
assert float(dx_max.sum()) == float(dx_avg.sum()) == float(dy.sum()) == 100.0

# %%
fig, axes = plt.subplots(1, 2, figsize=(6, 3))
grid(axes[0], dx_max[0, 0], "max: one cell per window", winners, window=2)
grid(axes[1], dx_avg[0, 0], "average: a quarter each", np.full((4, 4), 0.5), window=2)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Overlapping windows add up
#
# With a 3x3 window and stride 2 the windows overlap. A cell that wins several windows
# receives the sum of their gradients: below, the centre of a 5x5 input is the largest
# value, so it wins all four windows and collects all four upstream gradients.

# %%
x5 = jnp.asarray(np.arange(25.0).reshape(5, 5) % 7)[None, None].at[0, 0, 2, 2].set(100.0)
dy5 = jnp.array([[[[1.0, 2.0], [3.0, 4.0]]]])
dx5 = pool_vjp(lambda x: jaxconv.max_pool(x, 3, stride=2), x5, dy5)
print(np.asarray(dx5[0, 0]))
assert float(dx5[0, 0, 2, 2]) == 1.0 + 2.0 + 3.0 + 4.0
assert float(jnp.abs(dx5).sum()) == 10.0  # and nothing else gets any
check("overlapping windows vs the loops", dx5, ref.max_pool_grad(x5, dy5, 3, 2))

# %% [markdown]
# ## 4. Where the maximum has no derivative: ties and NaN
#
# `max` is not differentiable where two entries tie for the maximum. Like `jax.nn.relu`,
# which picks `relu'(0) = 0`, `jaxconv` states a convention: **the first maximum in
# row-major window order wins** and receives the whole gradient (PyTorch does the same).
# Splitting it between the tied cells would also be a valid subgradient; sending it to one
# cell keeps the backward a pure routing.
#
# A window holding a NaN outputs NaN, and its gradient goes to the window's **last** NaN --
# the cell responsible for the NaN output (PyTorch's rule). The loss becomes NaN either way;
# the convention only decides which input's gradient says so.

# %%
d1 = jnp.ones((1, 1, 1, 1))
tie = jnp.array([[[[7.0, 7.0], [2.0, 7.0]]]])
dx_tie = pool_vjp(lambda x: jaxconv.max_pool(x, 2), tie, d1)
check("tie: the first of three 7s gets it all", dx_tie[0, 0], [[1.0, 0.0], [0.0, 0.0]])
check("tie: jaxconv.reference agrees", ref.max_pool_grad(tie, d1, 2), dx_tie)

nan = jnp.array([[[[1.0, jnp.nan], [jnp.nan, 3.0]]]])
y_nan = jaxconv.max_pool(nan, 2)
dx_nan = pool_vjp(lambda x: jaxconv.max_pool(x, 2), nan, d1)
assert np.isnan(float(y_nan[0, 0, 0, 0]))  # NaN wins the window, over 3
check("NaN: the gradient goes to the last NaN", dx_nan[0, 0], [[0.0, 0.0], [1.0, 0.0]])
check("NaN: jaxconv.reference agrees", ref.max_pool_grad(nan, d1, 2), dx_nan)

# %%
fig, axes = plt.subplots(1, 4, figsize=(10, 2.8))
grid(axes[0], tie[0, 0], "tie: X", dx_tie[0, 0])
grid(axes[1], dx_tie[0, 0], "dL/dX: first maximum", dx_tie[0, 0])
grid(axes[2], nan[0, 0], "NaN: X", dx_nan[0, 0])
grid(axes[3], dx_nan[0, 0], "dL/dX: last NaN", dx_nan[0, 0])
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 5. What the backward pass remembers
#
# To route the gradient, max pooling's backward needs to know *which* cell won each window.
# The straightforward way to keep that is to save the input (and compare again) -- what
# `jax.grad` of `lax.reduce_window` does. `jaxconv` saves only the winner's position inside
# its window, as a `uint8` (a 2x2 window has only 4 positions to tell apart): one byte per
# *output* instead of four bytes per *input*. For 2x2 windows with stride 2 that is 1/16 of
# a float32 input.
#
# This is measured, not assumed: `jax.vjp` returns the backward function as a closure whose
# leaves are exactly the arrays saved for the backward pass (the residuals; JAX's
# `jax.ad_checkpoint.print_saved_residuals` lists them for any function, with their origin).
# Average pooling saves nothing at all.

# %%
x_big = jnp.asarray(np.random.default_rng(0).standard_normal((8, 16, 32, 32), np.float32))


def residuals(f, x):
    """The arrays `jax.vjp` keeps for the backward pass of `f` at `x`."""
    _, backward = jax.vjp(f, x)
    return [leaf for leaf in jax.tree_util.tree_leaves(backward) if hasattr(leaf, "nbytes")]


def lax_max_pool(x):
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")


saved = {
    "jaxconv.max_pool": residuals(lambda x: jaxconv.max_pool(x, 2), x_big),
    "jax.grad of lax.reduce_window": residuals(lax_max_pool, x_big),
    "jaxconv.avg_pool": residuals(lambda x: jaxconv.avg_pool(x, 2), x_big),
}
nbytes = {name: sum(int(r.nbytes) for r in rs) for name, rs in saved.items()}
print(f"input: {x_big.shape} float32, {x_big.nbytes:,} bytes")
for name, rs in saved.items():
    print(f"{name:<32} saves {nbytes[name]:>9,} bytes: {[(r.dtype.name, r.shape) for r in rs]}")

(winner_code,) = saved["jaxconv.max_pool"]
assert winner_code.dtype == jnp.uint8 and winner_code.shape == (8, 16, 16, 16)  # one per output
assert nbytes["jaxconv.max_pool"] * 16 == x_big.nbytes
assert nbytes["jaxconv.avg_pool"] == 0
assert nbytes["jaxconv.max_pool"] < nbytes["jax.grad of lax.reduce_window"]

# %%
fig, ax = plt.subplots(figsize=(7, 2.6))
names = ["input (float32)", *nbytes]
values = [x_big.nbytes / 1024, *(v / 1024 for v in nbytes.values())]
ax.barh(names, values, color=["0.6", "tab:orange", "tab:blue", "tab:green"])
for k, v in enumerate(values):
    ax.text(v, k, f" {v:,.0f} KiB", va="center")
ax.invert_yaxis()
ax.set_xlim(0, max(values) * 1.3)
ax.set_xlabel("KiB kept for the backward pass (2x2 windows, stride 2)")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Summary
#
# | layer | forward | backward: `dL/dX` |
# | --- | --- | --- |
# | max pool | maximum of each window | `dY` to the winner (first tie, last NaN); overlaps add |
# | average pool | mean of each window | `dY / window size` to every cell of the window |
#
# Max pooling has to remember the winners -- one byte per output in `jaxconv` -- while
# average pooling needs nothing but the shapes.
