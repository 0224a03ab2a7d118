"""The ``pool`` suite: forward+backward time of jaxconv's pools against ``lax.reduce_window``.

What is timed, per case and contender: one jitted call returning ``d/dx sum(pool(x) * ct)``
for a fixed random cotangent ``ct`` -- forward and backward, as in a training step.
Contenders:

- ``jaxconv``: ``jaxconv.max_pool`` / ``jaxconv.avg_pool`` (hand-derived VJPs);
- ``lax``:     ``jax.grad`` of ``lax.reduce_window`` (max; or add, divided by the window);
- ``torch``:   ``torch.nn.functional.{max,avg}_pool2d`` + ``torch.autograd.grad`` on the CPU
  with ``os.cpu_count()`` threads when JAX runs on the CPU, on CUDA when JAX runs on a GPU
  and PyTorch has CUDA; otherwise ``n/a``.

Two more timings per case put jaxconv against the memory it must move:

- ``jaxconv y**2``: ``d/dx sum(pool(x)**2)``, a loss that reads the pooled output, so the
  backward's upstream gradient is computed from the forward's output;
- ``copy``: the bytes an ideal fused forward+backward must touch, as one jitted elementwise
  pass: ``copy(x, ct) = 2*x + up(ct)``, where ``up`` repeats each entry of ``ct`` ``stride``
  times along each spatial axis and zero-pads (or crops) it to ``x``'s spatial size. It
  reads ``x`` once and ``ct`` once and writes one ``x``-sized array: what a max pool's
  forward+backward reads and writes, less its one-byte-per-output winner residual.

``fwd+bwd/copy`` and ``y**2/copy`` are the two losses' times over the copy's (1: at the
memory-bandwidth bound). The 2x2/2 case's arrays are 33.5 MB, above glibc's 32 MiB mmap
cap, so by default each call may page-fault its fresh result in (measured: a copy of x took
8 ms instead of 2.4 ms), and the ratios then flatter the pool; the bandwidth-bound ratios
come from a run with ``MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=4000000000``
in the environment (freed buffers are reused, nothing is faulted in).

All float32, channels-first. Before timing, jaxconv's gradients (and PyTorch's) are checked
against lax's, in both loss forms; then the contenders are timed round-robin
(:mod:`jaxconv._bench.timing`), medians of ``repeats`` samples (default 9; 2 when quick) of
at least 50 ms each (no minimum when quick), after one untimed warm-up call each.

Goals (issue 3), CPU float32: max pool 2x2/2 >= 5x faster than lax, 3x3/2 pad 1 >= 4x,
3x3/1 pad 1 >= 3x, and faster than PyTorch in all three; average pooling at least as fast
as lax. Issue 11: max pool 2x2/2's forward+backward within 2x of the copy, in both loss
forms (``fwd+bwd/copy <= 2`` and ``y**2/copy <= 2``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import jaxconv

from . import timing
from .suite import Options, Progress, Table, select_device, torch_for

GRAD_TOLERANCE = 1e-6  # max/avg pool gradients are exact up to float32 rounding of a mean


@dataclasses.dataclass(frozen=True)
class Case:
    """One 2-D pooling configuration on a channels-first ``(N, C, H, W)`` input."""

    name: str
    op: str  # "max" or "avg"
    x_shape: tuple[int, ...]
    window: int
    stride: int
    padding: int = 0
    goal: float = 1.0  # required lax/jaxconv speed-up
    copy_goal: float | None = None  # largest fwd+bwd/copy allowed, both loss forms

    @property
    def out_shape(self) -> tuple[int, ...]:
        n, c, *spatial = self.x_shape
        out = [(s + 2 * self.padding - self.window) // self.stride + 1 for s in spatial]
        return (n, c, *out)


def cases(quick: bool) -> list[Case]:
    """The issue's three max-pool cases, then average pooling on the same shapes."""
    shapes = (
        [(2, 8, 16, 16), (2, 8, 14, 14), (2, 8, 8, 8)]
        if quick
        else [(32, 64, 64, 64), (32, 64, 56, 56), (16, 64, 32, 32)]
    )
    geometry = [
        ("2x2/2", 2, 2, 0, 5.0, 2.0),
        ("3x3/2 p1", 3, 2, 1, 4.0, None),
        ("3x3/1 p1", 3, 1, 1, 3.0, None),
    ]
    out = []
    for op in ("max", "avg"):
        for shape, (label, k, s, p, goal, copy_goal) in zip(shapes, geometry, strict=True):
            dims = "x".join(map(str, shape))
            is_max = op == "max"
            out.append(
                Case(
                    f"{op} {label} {dims}",
                    op,
                    shape,
                    k,
                    s,
                    p,
                    goal if is_max else 1.0,
                    copy_goal if is_max else None,
                )
            )
    return out


def _jaxconv_pool(case: Case) -> Callable[[Any], Any]:
    def pool(x):
        if case.op == "max":
            return jaxconv.max_pool(x, case.window, case.stride, case.padding)
        return jaxconv.avg_pool(x, case.window, case.stride, case.padding)

    return pool


def _lax_pool(case: Case) -> Callable[[Any], Any]:
    dims = (1, 1, case.window, case.window)
    strides = (1, 1, case.stride, case.stride)
    pads = ((0, 0), (0, 0), (case.padding, case.padding), (case.padding, case.padding))

    def pool(x):
        if case.op == "max":
            return lax.reduce_window(x, -jnp.inf, lax.max, dims, strides, pads)
        # PyTorch's default count_include_pad=True: divide by the full window
        return lax.reduce_window(x, 0.0, lax.add, dims, strides, pads) / case.window**2

    return pool


def _grad(pool: Callable[[Any], Any]) -> Any:
    """``d/dx sum(pool(x) * ct)``: a fixed upstream gradient."""
    return jax.jit(jax.grad(lambda x, ct: jnp.sum(pool(x) * ct)))


def _grad_squared(pool: Callable[[Any], Any]) -> Any:
    """``d/dx sum(pool(x)**2)``: the upstream gradient is computed from the output."""
    return jax.jit(jax.grad(lambda x: jnp.sum(pool(x) ** 2)))


def _copy(case: Case) -> Any:
    """The copy reference of the module docstring: ``2*x + up(ct)``, one fused pass."""

    def copy(x, ct):
        up = ct
        for axis in (2, 3):
            up = jnp.repeat(up, case.stride, axis=axis)
            pad = [(0, 0, 0)] * up.ndim
            pad[axis] = (0, x.shape[axis] - up.shape[axis], 0)
            up = lax.pad(up, jnp.zeros((), up.dtype), pad)
        return 2 * x + up

    return jax.jit(copy)


def _torch_grad(torch: Any, case: Case, x: np.ndarray, ct: np.ndarray, device: str):
    fn = getattr(torch.nn.functional, f"{case.op}_pool2d")
    tx = torch.from_numpy(x).to(device).requires_grad_(True)
    tct = torch.from_numpy(ct).to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def run():
        y = fn(tx, case.window, case.stride, case.padding)
        (g,) = torch.autograd.grad(y, (tx,), grad_outputs=tct)
        sync()
        return g

    return run, run().detach().cpu().numpy()


def run_case(
    case: Case, device: Any, torch_dev: tuple[Any, str], repeats: int, min_sample_s: float
) -> dict[str, Any]:
    """Check the gradients against ``lax``'s, then time every contender round-robin."""
    rng = np.random.default_rng(len(case.name))
    x = rng.standard_normal(case.x_shape, dtype=np.float32)  # continuous: no ties
    ct = rng.standard_normal(case.out_shape, dtype=np.float32)
    args = [jax.device_put(a, device) for a in (x, ct)]
    grads = {"jaxconv": _grad(_jaxconv_pool(case)), "lax": _grad(_lax_pool(case))}
    fns: dict[str, Callable[[], Any]] = {
        name: timing.blocking(g, args) for name, g in grads.items()
    }
    fns["jaxconv y**2"] = timing.blocking(_grad_squared(_jaxconv_pool(case)), args[:1])
    reference = np.asarray(fns["lax"]())
    errors = {
        "jaxconv": timing.rel_err(fns["jaxconv"](), reference),
        "jaxconv y**2": timing.rel_err(
            fns["jaxconv y**2"](), _grad_squared(_lax_pool(case))(args[0])
        ),
    }
    fns["copy"] = timing.blocking(_copy(case), args)
    torch, torch_device = torch_dev
    if torch is not None:
        fns["torch"], torch_g = _torch_grad(torch, case, x, ct, torch_device)
        errors["torch"] = timing.rel_err(torch_g, reference)
    samples = timing.time_round_robin(fns, repeats=repeats, min_sample_s=min_sample_s)
    ms = {name: 1e3 * timing.summarize(s)["median"] for name, s in samples.items()}
    return {
        "case": dataclasses.asdict(case),
        "ms": ms,
        "over_copy": {
            "fwd+bwd": ms["jaxconv"] / ms["copy"],
            "y**2": ms["jaxconv y**2"] / ms["copy"],
        },
        "samples_ms": {name: [1e3 * t for t in s] for name, s in samples.items()},
        "speedup_vs_lax": ms["lax"] / ms["jaxconv"],
        "speedup_vs_torch": ms["torch"] / ms["jaxconv"] if "torch" in ms else None,
        "max_rel_err_vs_lax": errors,
    }


def run(options: Options, progress: Progress) -> list[Table]:
    """Run the suite (see the module docstring); one table."""
    device = select_device(options.device)
    torch_dev = torch_for(device.platform, options.torch)
    repeats = options.repeats or (2 if options.quick else 9)
    min_sample_s = 0.0 if options.quick else 0.050
    todo = cases(options.quick)
    progress.start(len(todo), "pool")
    results = []
    with jax.default_device(device):
        for case in todo:
            results.append(run_case(case, device, torch_dev, repeats, min_sample_s))
            progress.advance(f"pool: {case.name}")

    rows: list[list[Any]] = []
    chart: dict[str, float] = {}
    missed = []
    for r in results:
        name, ms = r["case"]["name"], r["ms"]
        rows.append(
            [
                name,
                ms["jaxconv"],
                ms["lax"],
                ms.get("torch"),
                r["speedup_vs_lax"],
                f">= {r['case']['goal']:g}x",
                r["speedup_vs_torch"],
                max(r["max_rel_err_vs_lax"].values()),
                ms["jaxconv y**2"],
                ms["copy"],
                r["over_copy"]["fwd+bwd"],
                r["over_copy"]["y**2"],
                "" if r["case"]["copy_goal"] is None else f"<= {r['case']['copy_goal']:g}x",
            ]
        )
        chart[f"{name}: lax/jaxconv"] = r["speedup_vs_lax"]
        if r["speedup_vs_torch"] is not None:
            chart[f"{name}: torch/jaxconv"] = r["speedup_vs_torch"]
        if r["speedup_vs_lax"] < r["case"]["goal"]:
            missed.append(f"{name}: {r['speedup_vs_lax']:.2f}x vs lax")
        vs_torch = r["speedup_vs_torch"]
        if r["case"]["op"] == "max" and vs_torch is not None and vs_torch < 1.0:
            missed.append(f"{name}: {vs_torch:.2f}x vs torch")
        copy_goal = r["case"]["copy_goal"]
        for form, ratio in r["over_copy"].items():
            if copy_goal is not None and ratio > copy_goal:
                missed.append(f"{name}: {form} {ratio:.2f}x the copy")
    wrong = [
        f"{r['case']['name']}: gradient differs from lax by {r['max_rel_err_vs_lax']}"
        for r in results
        if not max(r["max_rel_err_vs_lax"].values()) <= GRAD_TOLERANCE
    ]
    passed = not missed and not wrong
    verdict = ("PASS: every goal met" if passed else "FAIL: " + "; ".join(wrong + missed)) + (
        " [quick: tiny shapes, timings meaningless]" if options.quick else ""
    )
    return [
        Table(
            title="pool: forward+backward, jaxconv max/avg pool vs jax.grad of lax.reduce_window",
            columns=[
                "case",
                "jaxconv ms",
                "lax ms",
                "torch ms",
                "lax/jaxconv",
                "goal",
                "torch/jaxconv",
                "max err",
                "y**2 ms",
                "copy ms",
                "fwd+bwd/copy",
                "y**2/copy",
                "copy goal",
            ],
            rows=rows,
            ratios=chart,
            notes=[
                f"float32, median of {repeats} round-robin samples; torch: "
                + (torch_dev[1] if torch_dev[0] is not None else f"n/a ({torch_dev[1]})"),
                "x/jaxconv above 1: jaxconv is faster; goals are CPU goals",
                "y**2: grad of sum(pool(x)**2); copy: 2*x + up(ct), the bytes fwd+bwd must "
                "touch; x/copy at 1: memory-bandwidth bound",
                "an x-sized result above glibc's 32 MiB mmap cap is page-faulted in afresh by "
                "every call, which can triple the copy's time and hide a slow backward: for "
                "the bandwidth-bound figures run with MALLOC_MMAP_THRESHOLD_=1000000000 "
                "MALLOC_TRIM_THRESHOLD_=4000000000 in the environment",
                verdict,
            ],
            passed=None if options.quick and not wrong else passed,
            data={"repeats": repeats, "results": results},
        )
    ]
