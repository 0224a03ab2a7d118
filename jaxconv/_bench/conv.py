"""The ``conv`` suite: forward+backward time of ``jaxconv.conv`` against ``jax.grad`` of ``lax``.

What is timed, for each case and contender: one jitted call returning the gradients with
respect to ``x``, ``w`` and ``bias`` of ``sum(conv(x, w, bias) * ct)`` for a fixed random
cotangent ``ct`` -- the forward and the whole backward, as in a training step. Contenders:

- ``direct``: ``jaxconv.conv(..., method="direct")`` (hand-derived VJP);
- ``auto``:   ``jaxconv.conv(..., method="auto")``;
- ``lax``:    ``jax.grad`` of ``lax.conv_general_dilated`` + bias (XLA's own transpose rules);
- ``torch``:  ``torch.nn.functional.conv{1,2,3}d`` forward + ``torch.autograd.grad``, on the
  CPU with ``os.cpu_count()`` threads when JAX runs on the CPU, on CUDA when JAX runs on a
  GPU and PyTorch has CUDA; otherwise ``n/a``.

All float32, channels-first. Every JAX contender is compiled up front (in parallel on the
CPU); before timing, every contender's gradients (PyTorch's too) are checked against
``lax``'s, so the table never compares computations that disagree. Contenders are then timed
round-robin (:mod:`jaxconv._bench.timing`); each number is the median of ``repeats``
samples (default 12, whole cycles of the balanced order; 2 when quick) of at least 20 ms
each (no minimum when quick).

Goal (issue 2): geometric-mean ``direct/lax <= 1.05`` and no case above ``1.15``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import jaxconv

from . import timing
from .suite import Options, Progress, Table, select_device, torch_for

GEOMEAN_GOAL = 1.05
CASE_GOAL = 1.15
RATIOS = ("direct/lax", "auto/lax", "direct/torch")


@dataclasses.dataclass(frozen=True)
class Case:
    """One benchmark configuration, channels-first: ``x`` ``(N, C_in, *S)``, ``w``
    ``(C_out, C_in // groups, *K)``; symmetric integer padding (so PyTorch takes it too)."""

    name: str
    x_shape: tuple[int, ...]
    w_shape: tuple[int, ...]
    stride: int = 1
    padding: int = 0
    groups: int = 1
    dilation: int = 1

    @property
    def ndim(self) -> int:
        return len(self.w_shape) - 2

    @property
    def out_shape(self) -> tuple[int, ...]:
        spatial = jaxconv.conv_output_shape(
            self.x_shape[2:], self.w_shape[2:], self.stride, self.padding, self.dilation
        )
        return (self.x_shape[0], self.w_shape[0], *spatial)


def cases(quick: bool) -> list[Case]:
    """The issue's six cases; ``quick`` shrinks every shape (same kernels, strides, groups).

    The quick shapes are also picked so that, on the CPU, ``method="auto"`` chooses the same
    algorithm as for the full shapes (when written: direct, direct, direct, shift, direct,
    fft), so the smoke run goes down the same code paths -- and stays quick: a 7x7 stem with
    4 filters would choose ``shift``, whose 49-tap program takes seconds to compile.
    """
    if quick:
        return [
            Case("ResNet 3x3", (2, 4, 8, 8), (4, 4, 3, 3), padding=1),
            Case("7x7 s2 stem", (1, 3, 16, 16), (16, 3, 7, 7), stride=2, padding=3),
            Case("1x1", (2, 8, 4, 4), (4, 8, 1, 1)),
            Case("depthwise 3x3", (2, 4, 8, 8), (4, 1, 3, 3), padding=1, groups=4),
            Case("1-D k5", (2, 4, 32), (4, 4, 5), padding=2),
            Case("3-D 3x3x3", (2, 8, 8, 8, 8), (8, 8, 3, 3, 3), padding=1),
        ]
    return [
        Case("ResNet 3x3", (16, 64, 32, 32), (64, 64, 3, 3), padding=1),
        Case("7x7 s2 stem", (8, 3, 112, 112), (64, 3, 7, 7), stride=2, padding=3),
        Case("1x1", (16, 256, 16, 16), (64, 256, 1, 1)),
        Case("depthwise 3x3", (16, 64, 32, 32), (64, 1, 3, 3), padding=1, groups=64),
        Case("1-D k5", (16, 64, 1024), (64, 64, 5), padding=2),
        Case("3-D 3x3x3", (4, 16, 16, 16, 16), (16, 16, 3, 3, 3), padding=1),
    ]


# --------------------------------------------------------------------------- contenders


def _jaxconv_grad(case: Case, method: str) -> Any:
    def loss(x, w, b, ct):
        y = jaxconv.conv(
            x,
            w,
            b,
            stride=case.stride,
            padding=case.padding,
            dilation=case.dilation,
            groups=case.groups,
            method=method,
        )
        return jnp.sum(y * ct)

    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def _lax_grad(case: Case) -> Any:
    n = case.ndim

    def loss(x, w, b, ct):
        y = lax.conv_general_dilated(
            x,
            w,
            window_strides=(case.stride,) * n,
            padding=((case.padding, case.padding),) * n,
            rhs_dilation=(case.dilation,) * n,
            dimension_numbers=None,  # channels-first, like jaxconv's default
            feature_group_count=case.groups,
        )
        return jnp.sum((y + b.reshape((1, -1) + (1,) * n)) * ct)

    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def _torch_grad(torch: Any, case: Case, arrays: Sequence[np.ndarray], device: str):
    """A blocking closure computing PyTorch's forward+backward, and its gradients once."""
    fn = getattr(torch.nn.functional, f"conv{case.ndim}d")
    x, w, b, ct = (torch.from_numpy(np.array(a)).to(device) for a in arrays)
    for t in (x, w, b):
        t.requires_grad_(True)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def run():
        y = fn(
            x,
            w,
            b,
            stride=case.stride,
            padding=case.padding,
            dilation=case.dilation,
            groups=case.groups,
        )
        grads = torch.autograd.grad(y, (x, w, b), grad_outputs=ct)
        sync()
        return grads

    grads = tuple(g.detach().cpu().numpy() for g in run())
    return run, grads


# --------------------------------------------------------------------------- running


def _inputs(case: Case, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    fan_in = math.prod(case.w_shape[1:])
    return [
        rng.standard_normal(case.x_shape, dtype=np.float32),
        (rng.standard_normal(case.w_shape, dtype=np.float32) / np.sqrt(fan_in)).astype(np.float32),
        rng.standard_normal(case.w_shape[:1], dtype=np.float32),
        rng.standard_normal(case.out_shape, dtype=np.float32),
    ]


@dataclasses.dataclass
class Prepared:
    """One case's inputs (on the host and on the device) and its compiled JAX contenders."""

    case: Case
    host: list[np.ndarray]
    args: list[jax.Array]
    compiled: dict[str, Any]


def prepare(cases_: Sequence[Case], device: Any, progress: Progress) -> list[Prepared]:
    """Trace every JAX contender of every case, then compile them all, in parallel.

    Tracing holds the GIL, XLA's compiler does not: compiling on all cores at once roughly
    divides the start-up time (most of a quick run) by the number of cores. Only on the CPU:
    on a GPU, compiling autotunes convolution algorithms by timing them on the device, and
    concurrent autotuning would skew those timings -- and so the algorithms each contender
    ends up with.
    """
    todo = []
    for case in cases_:
        host = _inputs(case, seed=len(case.name))
        args = [jax.device_put(a, device) for a in host]
        grads = {
            "direct": _jaxconv_grad(case, "direct"),
            "auto": _jaxconv_grad(case, "auto"),
            "lax": _lax_grad(case),
        }
        lowered = {name: g.lower(*args) for name, g in grads.items()}
        todo.append((case, host, args, lowered))
    jobs = [(i, name, low) for i, (*_, lowered) in enumerate(todo) for name, low in lowered.items()]
    progress.start(len(jobs), "conv: compiling")
    workers = (os.cpu_count() or 1) if device.platform == "cpu" else 1
    compiled: list[dict[str, Any]] = [{} for _ in todo]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for (i, name, _), exe in zip(
            jobs, pool.map(lambda job: job[2].compile(), jobs), strict=True
        ):
            compiled[i][name] = exe
            progress.advance(f"conv: compiled {todo[i][0].name} {name}")
    return [Prepared(case, host, args, compiled[i]) for i, (case, host, args, _) in enumerate(todo)]


def run_case(
    prepared: Prepared,
    torch_dev: tuple[Any, str],
    repeats: int,
    min_sample_s: float,
    warmup: int,
) -> dict[str, Any]:
    """Check every contender's gradients against ``lax``'s, then time them round-robin."""
    case, host, args = prepared.case, prepared.host, prepared.args
    fns: dict[str, Callable[[], Any]] = {
        name: timing.blocking(exe, args) for name, exe in prepared.compiled.items()
    }
    reference = [np.asarray(r) for r in fns["lax"]()]
    errors = {
        name: max(timing.rel_err(a, r) for a, r in zip(fns[name](), reference, strict=True))
        for name in ("direct", "auto")
    }
    torch, torch_device = torch_dev
    if torch is not None:
        fns["torch"], torch_grads = _torch_grad(torch, case, host, torch_device)
        errors["torch"] = max(
            timing.rel_err(a, r) for a, r in zip(torch_grads, reference, strict=True)
        )
    samples = timing.time_round_robin(
        fns, repeats=repeats, warmup=warmup, min_sample_s=min_sample_s
    )
    ms = {name: 1e3 * timing.summarize(s)["median"] for name, s in samples.items()}
    ratios = {f"{m}/lax": ms[m] / ms["lax"] for m in ("direct", "auto")}
    ratios["direct/torch"] = ms["direct"] / ms["torch"] if "torch" in ms else math.nan
    return {
        "case": dataclasses.asdict(case),
        "ms": ms,
        "samples_ms": {name: [1e3 * t for t in s] for name, s in samples.items()},
        "ratios": ratios,
        "max_rel_err_vs_lax": errors,
    }


def _num(value: float) -> float | None:
    return None if math.isnan(value) else value


def run(options: Options, progress: Progress) -> list[Table]:
    """Run the suite (see the module docstring); one table, with a geo-mean row."""
    device = select_device(options.device)
    torch_dev = torch_for(device.platform, options.torch)
    repeats = options.repeats or (2 if options.quick else 12)
    min_sample_s = 0.0 if options.quick else 0.020
    todo = cases(options.quick)
    results = []
    with jax.default_device(device):
        prepared = prepare(todo, device, progress)
        progress.start(len(prepared), "conv: timing")
        for p in prepared:
            # The gradient check already ran each compiled contender once; a quick run needs
            # no further warm-up, a real run takes one more untimed round.
            results.append(
                run_case(p, torch_dev, repeats, min_sample_s, warmup=0 if options.quick else 1)
            )
            progress.advance(f"conv: {p.case.name}")
    geo = {k: timing.geomean(r["ratios"][k] for r in results) for k in RATIOS}

    rows: list[list[Any]] = []
    chart: dict[str, float] = {}
    for r in results:
        ms, ratios, name = r["ms"], r["ratios"], r["case"]["name"]
        rows.append(
            [
                name,
                *(ms.get(m) for m in ("direct", "auto", "lax", "torch")),
                *(_num(ratios[k]) for k in RATIOS),
                max(r["max_rel_err_vs_lax"].values()),
            ]
        )
        chart[f"{name}: lax/auto"] = ms["lax"] / ms["auto"]
        if "torch" in ms:
            chart[f"{name}: torch/auto"] = ms["torch"] / ms["auto"]
    rows.append(["geo-mean", "", "", "", "", *(_num(geo[k]) for k in RATIOS), ""])

    tol = 2e-3 if device.platform == "cpu" else 2e-2  # GPUs may run float32 convs as TF32
    bad = [
        f"{r['case']['name']} ({name}: {err:.1e})"
        for r in results
        for name, err in r["max_rel_err_vs_lax"].items()
        if not err <= tol
    ]
    worst = max(results, key=lambda r: r["ratios"]["direct/lax"])
    passed = geo["direct/lax"] <= GEOMEAN_GOAL and worst["ratios"]["direct/lax"] <= CASE_GOAL
    passed = passed and not bad
    verdict = (
        f"{'PASS' if passed else 'FAIL'}: geo-mean jaxconv(direct)/lax = "
        f"{geo['direct/lax']:.3f} (goal <= {GEOMEAN_GOAL}), worst case "
        f"{worst['case']['name']} = {worst['ratios']['direct/lax']:.3f} (goal <= {CASE_GOAL})"
        + (f"; gradients disagree with lax beyond {tol:g}: {', '.join(bad)}" if bad else "")
        + (" [quick: tiny shapes, timings meaningless]" if options.quick else "")
    )
    return [
        Table(
            title="conv: forward+backward, jaxconv.conv vs jax.grad of lax",
            columns=[
                "case",
                "direct ms",
                "auto ms",
                "lax ms",
                "torch ms",
                *RATIOS,
                "max err",
            ],
            rows=rows,
            ratios=chart,
            notes=[
                f"float32, median of {repeats} round-robin samples; torch: "
                + (torch_dev[1] if torch_dev[0] is not None else f"n/a ({torch_dev[1]})"),
                "x/lax below 1: jaxconv is faster; max err: worst relative difference of any "
                "contender's gradients from lax's",
                verdict,
            ],
            passed=None if options.quick and not bad else passed,
            data={
                "repeats": repeats,
                "results": results,
                "geomean": geo,
                "goal": {"geomean_max": GEOMEAN_GOAL, "case_max": CASE_GOAL, "passed": passed},
            },
        )
    ]
