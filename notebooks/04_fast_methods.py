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
# # 4. Fast methods: FFT, shifted slices, and how `auto` chooses
#
# The lecture remarks that a convolution is a product in the frequency domain. Since both
# gradients of a convolution are convolutions, they are products of spectra too -- and the
# spectra of `X` and `W` computed for the forward pass can be reused by the backward pass.
# `jaxconv.conv(..., method="fft")` does exactly that; `method="shift"` computes depthwise
# convolutions as a sum of shifted, per-channel-scaled slices; `method="direct"` hands the
# sum to XLA as one convolution; `method="auto"` (the default) picks one per call from a
# cost model that `jaxconv.explain_method` prints.
#
# This notebook derives the FFT gradients by hand, times the methods at small sizes, reads
# `explain_method`, and shows where the FFT's accuracy bound bites. Every value claim is an
# assertion; timings are only plotted, since they are noisy.

# %%
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from jax import lax

import jaxconv


def check(name, actual, expected, tol=1e-4):
    """Assert two arrays agree (float32 rounding allowed) and say so."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (name, actual.shape, expected.shape)
    err = float(np.max(np.abs(actual - expected))) / max(float(np.max(np.abs(expected))), 1e-30)
    assert err <= tol, f"{name}: relative error {err:.1e} > {tol:.0e}"
    print(f"{name:<58} OK  (relative error {err:.1e})")


rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. The gradient as a product of spectra
#
# Write `F` for the 2-D discrete Fourier transform over an `N x N` grid and `*` for complex
# conjugation. Correlation in space is multiplication by a conjugate spectrum, convolution
# is multiplication by a spectrum. For a "valid" correlation of an `N x N` image with a
# `K x K` kernel, every index stays inside the grid, so no wrap-around sneaks in:
#
# | | in space | in frequency |
# | --- | --- | --- |
# | forward | `Y[i] = sum_a X[i + a] W[a]` | `F(Y) = F(X) F(W)*` |
# | `dL/dW` | `dW[a] = sum_i dY[i] X[i + a]` | `F(dW) = F(X) F(dY)*` |
# | `dL/dX` | `dX[q] = sum_i dY[i] W[q - i]` | `F(dX) = F(dY) F(W)` |
#
# (with sums over input channels in the forward and over output channels in `dL/dX`). The
# backward needs one new transform, `F(dY)`: the spectra `F(X)` and `F(W)` are the ones the
# forward already computed. Below with NumPy's real FFT on a 3-channel 32x32 image and four
# 7x7 filters, checked against `jax.grad` of `method="direct"` (and of `method="fft"`).

# %%
n, k = 32, 7
x = rng.standard_normal((1, 3, n, n)).astype(np.float32)
w = rng.standard_normal((4, 3, k, k)).astype(np.float32)
dy = rng.standard_normal((1, 4, n - k + 1, n - k + 1)).astype(np.float32)

fx = np.fft.rfft2(x[0].astype(np.float64))  # (3, 32, 17): the forward's spectra ...
fw = np.fft.rfft2(w.astype(np.float64), s=(n, n))  # (4, 3, 32, 17)
fdy = np.fft.rfft2(dy[0].astype(np.float64), s=(n, n))  # ... and the one new transform

y_fft = np.fft.irfft2(np.einsum("chw,ochw->ohw", fx, fw.conj()), s=(n, n))[
    :, : n - k + 1, : n - k + 1
]
dw_fft = np.fft.irfft2(fx[None] * fdy[:, None].conj(), s=(n, n))[:, :, :k, :k]
dx_fft = np.fft.irfft2(np.einsum("ohw,ochw->chw", fdy, fw), s=(n, n))  # 26 + 7 - 1 = 32: no wrap


def loss(x, w, method):
    return jnp.sum(jaxconv.conv(x, w, method=method) * dy)


grads = {m: jax.jit(jax.grad(loss, (0, 1)), static_argnums=2)(x, w, m) for m in ("direct", "fft")}
check("forward: F(X) F(W)* vs method='direct'", y_fft[None], jaxconv.conv(x, w, method="direct"))
for m, (dx_m, dw_m) in grads.items():
    check(f"dL/dW: F(X) F(dY)* vs jax.grad of method={m!r}", dw_fft, dw_m)
    check(f"dL/dX: F(dY) F(W) vs jax.grad of method={m!r}", dx_fft[None], dx_m)


# %%
def log_spectrum(a):
    """log10 |F(a)| with the zero frequency in the middle."""
    return np.log10(np.abs(np.fft.fftshift(np.fft.fft2(a, s=(n, n)))) + 1e-6)


panels = [
    (x[0, 0], "log |F(X)|  (forward)"),
    (w[0, 0], "log |F(W)|  (forward)"),
    (dy[0, 0], "log |F(dY)|  (the new one)"),
    (dx_fft[0], "log |F(dX)| = log |F(dY) F(W)|"),
]
fig, axes = plt.subplots(1, 4, figsize=(12, 3.2))
for ax, (a, title) in zip(axes, panels, strict=True):
    ax.imshow(log_spectrum(a), cmap="magma")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 2. Time versus kernel size
#
# The direct method does `K^2` multiply-adds per output; the FFT's work depends on the grid,
# not on `K`; shifted slices also do `K^2` steps but as plain elementwise work, which wins
# for depthwise convolutions (one input channel per group), where XLA's grouped convolution
# is slow on a CPU. Forward + backward, jitted, for a depthwise layer (8 channels, 32x32,
# batch 2, `"SAME"` padding) at a few kernel sizes, with `jax.lax` as the baseline. `shift`
# supports at most 125 taps, and compiles slowly for large kernels, so it runs only for the
# small ones here. The README quotes the full benchmark.
#
# The times are from whatever machine runs this notebook, once: they are noisy and nothing
# is asserted about them. The values are asserted to agree.

# %%
xt = jnp.asarray(rng.standard_normal((2, 8, 32, 32)), jnp.float32)
sizes = [3, 7, 15]
methods = ["direct", "fft", "shift", "lax"]


def fwd_bwd(method):
    """The jitted (dL/dX, dL/dW) of L = sum(conv(x, w) * dy) under one method."""

    def loss(x, w, dy):
        if method == "lax":
            pads = jaxconv.padding_pairs("SAME", x.shape[2:], w.shape[2:])
            y = lax.conv_general_dilated(
                x, w, (1, 1), pads, feature_group_count=8, precision=lax.Precision.HIGHEST
            )
        else:
            y = jaxconv.conv(x, w, padding="SAME", groups=8, method=method)
        return jnp.sum(y * dy)

    return jax.jit(jax.grad(loss, (0, 1)))


def best_time(f, *args, repeats=5):
    jax.block_until_ready(f(*args))  # compile and warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - t0)
    return min(times)


timings = {m: {} for m in methods}
picks = {}
for size in sizes:
    wt = jnp.asarray(rng.standard_normal((8, 1, size, size)) / size, jnp.float32)
    dyt = jnp.asarray(rng.standard_normal((2, 8, 32, 32)), jnp.float32)
    picks[size] = jaxconv.explain_method(xt.shape, wt.shape, padding="SAME", groups=8).method
    expected = None
    for m in methods:
        if m == "shift" and size > 7:
            continue
        f = fwd_bwd(m)
        timings[m][size] = best_time(f, xt, wt, dyt)
        dx_m, dw_m = f(xt, wt, dyt)
        if expected is None:
            expected = (dx_m, dw_m)
        else:  # every method computes the same gradients
            check(f"{size}x{size}: {m} vs direct, dL/dX", dx_m, expected[0])
            check(f"{size}x{size}: {m} vs direct, dL/dW", dw_m, expected[1])
    print(
        f"{size}x{size}: "
        + ", ".join(f"{m} {t[size] * 1e3:.2f} ms" for m, t in timings.items() if size in t)
        + f"; auto picks {picks[size]}"
    )

# %%
fig, ax = plt.subplots(figsize=(6, 3.6))
for m, t in timings.items():
    ks = sorted(t)
    ax.plot(ks, [t[s] * 1e3 for s in ks], "o-", label=m)
for size, m in picks.items():
    ax.plot(size, timings[m][size] * 1e3, "s", ms=14, mfc="none", mec="k")
ax.plot([], [], "s", ms=10, mfc="none", mec="k", label="auto's pick")
ax.set_yscale("log")
ax.set_xticks(sizes)
ax.set_xlabel("kernel size K (K x K, depthwise, 8 channels, 32x32)")
ax.set_ylabel("forward + backward (ms)")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 3. What `explain_method` says, and why
#
# `auto` decides at trace time from the static shapes, with a cost model of the form
# `seconds = flops / rate + bytes / bandwidth + fixed` per method (forward and backward
# together), calibrated per backend. `jaxconv.explain_method` takes the same arguments as
# `conv` and returns the estimates and the reason; printing it gives a table. Three layers:
# a 31x31 kernel, a depthwise 3x3 and an ordinary ResNet 3x3.

# %%
cases = {
    "31x31 kernel": ((8, 16, 64, 64), (16, 16, 31, 31), dict(padding="SAME")),
    "depthwise 3x3": ((16, 64, 32, 32), (64, 1, 3, 3), dict(padding=1, groups=64)),
    "ResNet 3x3": ((16, 64, 32, 32), (64, 64, 3, 3), dict(padding=1)),
}
choices = {name: jaxconv.explain_method(xs, ws, **kw) for name, (xs, ws, kw) in cases.items()}
for name, choice in choices.items():
    print(f"--- {name}\n{choice}\n")

# The pick is the supported method with the smallest estimate ...
for name, choice in choices.items():
    supported = [e for e in choice.estimates if e.seconds is not None]
    assert choice.method == min(supported, key=lambda e: e.seconds).method, name
# ... direct's work grows with the taps: 31x31 vs 3x3 on otherwise equal shapes is 961/9 ...
flops = {
    k: {
        e.method: e.flops
        for e in jaxconv.explain_method((1, 4, 64, 64), (4, 4, k, k), padding="SAME").estimates
    }
    for k in (3, 31)
}
assert flops[31]["direct"] / flops[3]["direct"] == 961 / 9
# (the count is forward plus the two gradient convolutions, 2 flops per multiply-add)
assert flops[3]["direct"] == 3 * 2 * (4 * 4 * 3 * 3) * (64 * 64)
assert flops[31]["fft"] < 2 * flops[3]["fft"]  # ... while the FFT's barely moves
# ... and shift only takes depthwise and small grouped convolutions.
assert [e.seconds for e in choices["ResNet 3x3"].estimates if e.method == "shift"] == [None]
assert [c.method for c in choices.values()] == ["fft", "shift", "direct"]

# %% [markdown]
# ## 4. Where the FFT's accuracy bound bites
#
# The direct method adds up the `K^2` products of each window: its rounding error is
# relative to *that window's* values. An FFT mixes every pixel into every frequency, so its
# float32 rounding error is about `eps * (size of the whole image) * (size of the kernel)`,
# spread evenly over *all* outputs. Where an output is much smaller than the largest values
# in the image, that error is large relative to it.
#
# A high-dynamic-range image shows it: a dark region (values around 1) next to a bright
# strip 10,000 times brighter, and a 31x31 kernel. The outputs over the dark region do not
# see the strip at all -- yet under FFT they carry its rounding noise. The exact answer
# comes from float64 NumPy (a sum of 961 shifted slices).

# %%
hdr = rng.uniform(0.0, 1.0, (1, 1, 64, 64)).astype(np.float32)
hdr[..., 48:] *= 1e4  # the bright strip: the last 16 columns
k31 = (rng.standard_normal((1, 1, 31, 31)) / 31).astype(np.float32)
dark = (..., slice(None), slice(0, 32))  # outputs whose 31-wide windows end before column 48


def exact_same_correlation(x, w):
    """float64 correlation with 'SAME' padding, as a sum of shifted slices."""
    (kh, kw), (h, wd) = w.shape, x.shape
    xp = np.pad(x.astype(np.float64), [(kh // 2, kh // 2), (kw // 2, kw // 2)])
    return sum(w[a, b] * xp[a : a + h, b : b + wd] for a in range(kh) for b in range(kw))


exact = exact_same_correlation(hdr[0, 0], k31[0, 0].astype(np.float64))[None, None]
picked = jaxconv.explain_method(hdr.shape, k31.shape, padding="SAME").method
outputs = {m: jaxconv.conv(hdr, k31, padding="SAME", method=m) for m in ("direct", "fft", "auto")}
rel_err = {}
for m, out in outputs.items():
    err = np.abs(np.asarray(out, np.float64) - exact)[dark] / np.abs(exact[dark]).max()
    rel_err[m] = float(err.max())
    print(
        f"{m:>6}: largest error in the dark region, relative to its largest value: {rel_err[m]:.1e}"
    )
print("auto picks:", picked)
assert rel_err["direct"] < 1e-5  # float32 rounding of a 961-term sum
assert rel_err["fft"] > 1e-4  # the strip's rounding noise, 100x larger or more
assert picked == "fft" and np.array_equal(outputs["auto"], outputs["fft"])  # auto inherits it
abs_err = {m: np.abs(np.asarray(outputs[m], np.float64) - exact)[0, 0] for m in ("direct", "fft")}
ratio = {m: np.median(e[:, 48:]) / np.median(e[:, :32]) for m, e in abs_err.items()}
print(
    f"median |error| over the strip / over the dark region: direct {ratio['direct']:.0f}x, "
    f"fft {ratio['fft']:.1f}x"
)
assert ratio["direct"] > 1e3 and ratio["fft"] < 10

# %% [markdown]
# The maps show the absolute error of each output. The direct method's follows the local
# magnitude -- tiny over the dark region, larger over the strip -- while the FFT's is about
# the same everywhere:

# %%
fig, axes = plt.subplots(1, 3, figsize=(10, 3.2), layout="constrained")
axes[0].imshow(np.log10(hdr[0, 0]), cmap="gray")
axes[0].set_title("image, log10 (strip x 1e4)", fontsize=10)
top = np.log10(max(e.max() for e in abs_err.values()))
for ax, (m, err) in zip(axes[1:], abs_err.items(), strict=True):
    im = ax.imshow(np.log10(err + 1e-12), cmap="viridis", vmin=top - 7, vmax=top)
    ax.axvline(31.5, color="w", ls="--")
    ax.set_title(f"{m}: log10 |error|", fontsize=10)
    ax.text(15, 60, "dark region", color="w", ha="center", fontsize=8)
for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
fig.colorbar(im, ax=axes[1:], shrink=0.9)
plt.show()

# %% [markdown]
# ## Keeping auto exact
#
# When every output matters to full relative precision -- high-dynamic-range images,
# signals with a few huge entries, gradient checks -- do not let `auto` choose the FFT. Ask
# for `precision=jax.lax.Precision.HIGHEST` (or `"highest"`): `auto` then keeps to the
# methods that sum each window exactly as the lecture writes it (`direct`, `shift`,
# `matmul`, `im2col`), for the forward pass and both gradients, and `explain_method` says
# why the FFT was left out. Naming `method="direct"` does the same for one call.

# %%
choice = jaxconv.explain_method(hdr.shape, k31.shape, padding="SAME", precision="highest")
print(choice)
assert choice.method != "fft" and choice.costs["fft"] is None
exact_out = jaxconv.conv(hdr, k31, padding="SAME", precision="highest")
err_exact = float(
    np.abs(np.asarray(exact_out, np.float64) - exact)[dark].max() / np.abs(exact[dark]).max()
)
print(f"precision='highest': relative error in the dark region {err_exact:.1e}")
assert err_exact < 1e-5

# %% [markdown]
# ## Summary
#
# - Both gradients of a convolution are products of spectra: `F(dW) = F(X) F(dY)*` and
#   `F(dX) = F(dY) F(W)`, reusing the forward's `F(X)` and `F(W)`.
# - `direct` costs grow with the kernel's taps, `fft` with the grid; `shift` wins for
#   depthwise layers. `explain_method` shows the estimates `auto` compares.
# - The FFT's rounding error is relative to the whole image, not to each output: with a
#   high dynamic range, ask for `precision="highest"` (or `method="direct"`).
