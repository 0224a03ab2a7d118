"""The ``methods`` suite: every ``jaxconv.conv`` method against ``jax.grad`` of ``lax``.

For each case it times, side by side, the jitted forward+backward (the output and both
gradients for a fixed random cotangent) of ``lax.conv_general_dilated`` under JAX autodiff,
of ``jaxconv.conv`` with each method ``jaxconv.explain_method`` lists (``None``, shown as
``n/a``, where a method does not support the case) and with ``auto``, and of PyTorch when it
is importable (on the CPU, or on CUDA when JAX runs on a GPU). Every JAX contender is
compiled up front (in parallel on the CPU) and checked against ``lax`` before anything is
timed; then the contenders are timed round-robin (:mod:`jaxconv._bench.timing`), one call per
sample, medians of ``repeats`` rounds (default 7; 1 when quick) after two untimed calls each.
It reports the speed-ups of ``auto`` over ``lax`` and PyTorch, the method ``auto`` picked,
and whether ``auto`` is within 5% of the best single method.

Goals (issue 4, on a 2-core CPU): 31x31 >= 8x faster than lax, 13x13 >= 2x, depthwise
>= 10x and faster than PyTorch CPU; ``auto`` within 5% of the best method everywhere.

:func:`guard` (``python benchmarks/bench_methods.py --guard``) is a second, separate table:
the cost of ``method="fft"``'s non-finite guard on the cases above where ``auto`` picks fft
(issue 8: under 3% of the fft time). It is the one place here that reaches into jaxconv's
internals, because its baseline -- the same FFT code with no finiteness check, no
``lax.cond`` and no overflow scaling -- is not something jaxconv offers.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import jaxconv

from ..convolution._config import conv_config
from ..convolution.methods import fft
from ..convolution.methods.plan import MethodPlan, geometry
from . import timing
from .suite import Options, Progress, Table, select_device, torch_for

AUTO_SLACK = 1.05  # auto's program may be at most 5% slower than the fastest single method
GRAD_TOLERANCE = {"cpu": 2e-3, "gpu": 2e-2}  # GPUs may run float32 convolutions as TF32


@dataclass(frozen=True)
class Case:
    """One configuration: ``x`` ``(N, C_in, *spatial)``, ``w`` ``(C_out, C_in // groups,
    *kernel)``; ``goal`` is the speed-up of ``auto`` over ``lax`` the issue asks for (0: none),
    ``beat_torch`` whether it must also beat PyTorch."""

    name: str
    x: tuple[int, ...]
    w: tuple[int, ...]
    stride: int = 1
    padding: int | str = 0
    groups: int = 1
    goal: float = 0.0
    beat_torch: bool = False

    @property
    def goal_text(self) -> str:
        if not self.goal:
            return ""
        return f"lax>={self.goal:g}x" + (",>torch" if self.beat_torch else "")


def cases(quick: bool) -> list[Case]:
    """The issue's large-kernel and depthwise cases, then the core benchmark's cases.

    ``quick`` keeps the kernels, strides, padding modes and grouping of five of them but
    shrinks batch, channels and images, so the suite compiles and runs in seconds. It leaves
    out the 7x7 stem and the 3-D case, whose ``shift`` programs (49 and 27 taps) alone take
    seconds to compile.
    """
    if quick:
        return [
            Case("31x31 SAME", (1, 2, 16, 16), (2, 2, 31, 31), padding="SAME", goal=8.0),
            Case("13x13 SAME", (1, 4, 16, 16), (4, 4, 13, 13), padding="SAME", goal=2.0),
            Case(
                "dw 3x3 g64",
                (1, 8, 8, 8),
                (8, 1, 3, 3),
                padding=1,
                groups=8,
                goal=10.0,
                beat_torch=True,
            ),
            Case("resnet 3x3", (1, 4, 8, 8), (4, 4, 3, 3), padding=1),
            Case("1-D k5", (1, 4, 32), (4, 4, 5), padding=2),
        ]
    return [
        Case("31x31 SAME", (8, 16, 64, 64), (16, 16, 31, 31), padding="SAME", goal=8.0),
        Case("13x13 SAME", (8, 32, 64, 64), (32, 32, 13, 13), padding="SAME", goal=2.0),
        Case(
            "dw 3x3 g64",
            (16, 64, 32, 32),
            (64, 1, 3, 3),
            padding=1,
            groups=64,
            goal=10.0,
            beat_torch=True,
        ),
        Case("resnet 3x3", (16, 64, 32, 32), (64, 64, 3, 3), padding=1),
        Case("stem 7x7/2", (8, 3, 112, 112), (64, 3, 7, 7), stride=2, padding=3),
        Case("1x1", (16, 256, 16, 16), (64, 256, 1, 1)),
        Case("1-D k5", (16, 64, 1024), (64, 64, 5), padding=2),
        Case("3-D 3x3x3", (4, 16, 16, 16, 16), (16, 16, 3, 3, 3), padding=1),
    ]


def _lax_padding(case: Case) -> Any:
    if isinstance(case.padding, str):
        return case.padding
    return [(case.padding, case.padding)] * (len(case.x) - 2)


def _jax_fn(case: Case, method: str | None) -> Any:
    """Jitted ``(x, w, ct) -> (y, dx, dw)`` for a method, or for lax when ``method`` is None."""
    nd = len(case.x) - 2
    if method is None:

        def f(x, w):
            return lax.conv_general_dilated(
                x, w, (case.stride,) * nd, _lax_padding(case), feature_group_count=case.groups
            )
    else:

        def f(x, w):
            return jaxconv.conv(
                x, w, stride=case.stride, padding=case.padding, groups=case.groups, method=method
            )

    def fwd_bwd(x, w, ct):
        y, vjp = jax.vjp(f, x, w)
        return (y, *vjp(ct))

    return jax.jit(fwd_bwd)


def _torch_fn(torch: Any, case: Case, arrays: list[np.ndarray], device: str):
    """A blocking closure computing PyTorch's forward+backward, and its results once."""
    conv = getattr(torch.nn.functional, f"conv{len(case.x) - 2}d")
    pad = case.padding.lower() if isinstance(case.padding, str) else case.padding
    tx, tw, tct = (torch.from_numpy(np.array(a)).to(device) for a in arrays)
    tx.requires_grad_(True)
    tw.requires_grad_(True)

    def run():
        tx.grad = tw.grad = None
        y = conv(tx, tw, stride=case.stride, padding=pad, groups=case.groups)
        y.backward(tct)
        if device == "cuda":
            torch.cuda.synchronize()
        return y, tx.grad, tw.grad

    return run, [t.detach().cpu().numpy() for t in run()]


@dataclass
class _Prepared:
    case: Case
    choice: jaxconv.MethodChoice
    host: list[np.ndarray]
    args: list[jax.Array]
    compiled: dict[str, Any]  # "lax", each supported method, "auto"


def _prepare(todo: list[Case], device: Any, progress: Progress) -> list[_Prepared]:
    """Trace every contender, then compile them all (in parallel on the CPU only: a GPU
    autotunes while compiling, by timing on the device)."""
    rng = np.random.default_rng(0)
    staged = []
    for case in todo:
        x = rng.standard_normal(case.x, dtype=np.float32)
        w = (rng.standard_normal(case.w, dtype=np.float32) / np.sqrt(np.prod(case.w[1:]))).astype(
            np.float32
        )
        choice = jaxconv.explain_method(case.x, case.w, case.stride, case.padding, 1, case.groups)
        y_shape = jax.eval_shape(
            lambda x, w, c=case: jaxconv.conv(
                x, w, stride=c.stride, padding=c.padding, groups=c.groups
            ),
            jax.ShapeDtypeStruct(case.x, jnp.float32),
            jax.ShapeDtypeStruct(case.w, jnp.float32),
        ).shape
        ct = rng.standard_normal(y_shape, dtype=np.float32)
        host = [x, w, ct]
        args = [jax.device_put(a, device) for a in host]
        names: list[str | None] = [None]  # lax
        names += [e.method for e in choice.estimates if e.seconds is not None]
        names.append("auto")
        lowered = {name or "lax": _jax_fn(case, name).lower(*args) for name in names}
        staged.append((case, choice, host, args, lowered))
    jobs = [
        (i, name, low) for i, (*_, lowered) in enumerate(staged) for name, low in lowered.items()
    ]
    progress.start(len(jobs), "methods: compiling")
    workers = (os.cpu_count() or 1) if device.platform == "cpu" else 1
    compiled: list[dict[str, Any]] = [{} for _ in staged]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for (i, name, _), exe in zip(
            jobs, pool.map(lambda job: job[2].compile(), jobs), strict=True
        ):
            compiled[i][name] = exe
            progress.advance(f"methods: compiled {staged[i][0].name} {name}")
    return [
        _Prepared(case, choice, host, args, compiled[i])
        for i, (case, choice, host, args, _) in enumerate(staged)
    ]


def _run_case(p: _Prepared, torch_dev: tuple[Any, str], repeats: int) -> dict[str, Any]:
    """Check every contender against ``lax``, then time them round-robin."""
    fns: dict[str, Callable[[], Any]] = {
        name: timing.blocking(exe, p.args) for name, exe in p.compiled.items()
    }
    reference = [np.asarray(r) for r in fns["lax"]()]
    errors = {
        name: max(timing.rel_err(a, r) for a, r in zip(fns[name](), reference, strict=True))
        for name in fns
        if name != "lax"
    }
    torch, device = torch_dev
    if torch is not None:
        fns["torch"], got = _torch_fn(torch, p.case, p.host, device)
        errors["torch"] = max(timing.rel_err(a, r) for a, r in zip(got, reference, strict=True))
    # Two untimed calls each (compilation, caches, thread pools); the check above was one.
    samples = timing.time_round_robin(fns, repeats=repeats, warmup=1)
    ms = {name: 1e3 * timing.summarize(s)["median"] for name, s in samples.items()}
    return {
        "case": p.case.name,
        "auto_pick": p.choice.method,
        "ms": ms,
        "samples_ms": {name: [1e3 * t for t in s] for name, s in samples.items()},
        "max_rel_err_vs_lax": errors,
    }


def run(options: Options, progress: Progress) -> list[Table]:
    """Run the suite (see the module docstring); one table."""
    device = select_device(options.device)
    torch_dev = torch_for(device.platform, options.torch)
    repeats = options.repeats or (1 if options.quick else 7)
    tol = GRAD_TOLERANCE["cpu" if device.platform == "cpu" else "gpu"]
    todo = cases(options.quick)
    with jax.default_device(device):
        prepared = _prepare(todo, device, progress)
        methods = [e.method for e in prepared[0].choice.estimates]
        progress.start(len(prepared), "methods: timing")
        results = []
        for p in prepared:
            results.append(_run_case(p, torch_dev, repeats))
            progress.advance(f"methods: {p.case.name}")

    rows: list[list[Any]] = []
    chart: dict[str, float] = {}
    failures: list[str] = []
    for p, r in zip(prepared, results, strict=True):
        ms, case, pick = r["ms"], p.case, r["auto_pick"]
        best = min(ms[m] for m in methods if m in ms)
        # auto compiles to exactly the program of the method it picks (the same HLO), so both
        # columns time one program: the better of the two medians strips a loaded machine's
        # noise from the 5% check.
        auto_best = min(ms["auto"], ms[pick]) / best
        lax_auto = ms["lax"] / ms["auto"]
        torch_auto = ms["torch"] / ms["auto"] if "torch" in ms else None
        wrong = [f"{k} {e:.1e}" for k, e in r["max_rel_err_vs_lax"].items() if not e <= tol]
        if wrong:
            failures.append(f"{case.name} (disagrees with lax: {', '.join(wrong)})")
        goal = case.goal_text
        if goal and options.quick:
            goal += " (quick)"
        elif goal and device.platform != "cpu":
            goal += " (a CPU goal: not judged)"
        elif goal:
            met = lax_auto >= case.goal and (
                not case.beat_torch or torch_auto is None or torch_auto > 1.0
            )
            goal += " ok" if met else " MISSED"
            if not met:
                failures.append(case.name)
        if auto_best > AUTO_SLACK and not options.quick:
            failures.append(f"{case.name} (auto/best)")
        rows.append(
            [
                case.name,
                ms["lax"],
                *(ms.get(m) for m in methods),
                ms["auto"],
                ms.get("torch"),
                pick,
                lax_auto,
                torch_auto,
                auto_best,
                goal,
                max(r["max_rel_err_vs_lax"].values()),
            ]
        )
        chart[f"{case.name}: lax/auto"] = lax_auto
        if torch_auto is not None:
            chart[f"{case.name}: torch/auto"] = torch_auto
    passed = not failures
    verdict = ("all goals met" if passed else "not met: " + ", ".join(failures)) + (
        " [quick: tiny shapes, timings meaningless]" if options.quick else ""
    )
    judged = not options.quick or any("disagrees" in f for f in failures)
    return [
        Table(
            title="methods: forward+backward of every jaxconv.conv method vs jax.grad of lax",
            columns=[
                "case",
                "lax ms",
                *(f"{m} ms" for m in methods),
                "auto ms",
                "torch ms",
                "auto pick",
                "lax/auto",
                "torch/auto",
                "auto/best",
                "goal",
                "max err",
            ],
            rows=rows,
            ratios=chart,
            notes=[
                f"float32, median of {repeats} round-robin rounds; torch: "
                + (torch_dev[1] if torch_dev[0] is not None else f"n/a ({torch_dev[1]})")
                + "; n/a: the method does not support the case",
                "auto/best: the time of auto's program (auto's or its pick's column, the same "
                f"HLO) over the fastest single method (<= {AUTO_SLACK} passes)",
                verdict,
            ],
            passed=passed if judged else None,
            data={"repeats": repeats, "methods": methods, "results": results},
        )
    ]


# --------------------------------------------------------------------------- the fft guard

GUARD_GOAL = 0.03  # issue 8: the non-finite guard costs under 3% of the fft time


def guard_cases(quick: bool) -> list[Case]:
    """The cases of :func:`cases` on which ``auto`` picks fft (on the default backend)."""
    return [
        c
        for c in cases(quick)
        if jaxconv.explain_method(c.x, c.w, c.stride, c.padding, 1, c.groups).method == "fft"
    ]


def _fft_plan(case: Case, x: jax.Array) -> fft.FftPlan:
    """The plan ``jaxconv.conv(..., method="fft")`` builds for ``case``."""
    cfg, _ = conv_config(
        case.x,
        case.w,
        stride=case.stride,
        padding=case.padding,
        dilation=1,
        groups=case.groups,
        flip=False,
        channels_last=False,
        method="fft",
    )
    return fft.FftPlan.of(MethodPlan.build(x, None, cfg, geometry(case.x, case.w, cfg)))


def _unguarded_fft(plan: fft.FftPlan) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """fft's own forward and frequency-domain gradients with no finiteness check, no
    ``lax.cond`` and no overflow scaling (scales of 1, which XLA folds away): the baseline
    the guard's cost is measured against."""

    @jax.custom_vjp
    def conv(x, w):
        return fft._forward(x, w, None, plan, 1.0, 1.0)[0]

    def conv_fwd(x, w):
        y, x_hat, k_hat = fft._forward(x, w, None, plan, 1.0, 1.0)
        return y, (x_hat, k_hat)

    def conv_bwd(res, dy):
        x_hat, k_hat = res
        return fft._fft_grads(plan, x_hat, k_hat, 1.0, 1.0, dy, 1.0)

    conv.defvjp(conv_fwd, conv_bwd)
    return conv


def _output_and_grads(conv: Callable[[jax.Array, jax.Array], jax.Array]) -> Any:
    """Jitted ``(x, w, ct) -> ((dx, dw), y)``: the gradient of ``sum(y * ct)``, returning
    ``y`` too so that the forward is not dead code."""

    def loss(x, w, ct):
        y = conv(x, w)
        return jnp.sum(y * ct), y

    return jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))


def _quartiles(xs: list[float]) -> tuple[float, float, float]:
    if len(xs) < 2:  # --repeats 1
        return xs[0], xs[0], xs[0]
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, q2, q3


def _cpu_clocked(fn: Callable[[], Any], log: list[float]) -> Callable[[], Any]:
    """``fn``, appending each call's process CPU time (all threads) to ``log``."""

    def run() -> Any:
        t0 = time.process_time()
        out = fn()
        log.append(time.process_time() - t0)
        return out

    return run


def guard(options: Options, progress: Progress) -> list[Table]:
    """Time fwd+bwd of the shipped ``method="fft"`` against :func:`_unguarded_fft`.

    Per case, three contenders round-robin in one process: ``guarded`` (``jaxconv.conv`` with
    ``method="fft"``), ``unguarded``, and ``checks`` (the guard's reductions alone: the
    finiteness and scale of ``x``, ``w`` and ``dY``), ``repeats`` rounds (default 21; 3
    when quick). The overhead is the median over rounds of ``guarded / unguarded - 1`` (each
    round times both back to back, so a burst of machine load lands on both), with its
    quartiles, and again from the process's CPU time, which is less sensitive to other
    processes on a shared machine; ``checks %`` is the reductions' share of the unguarded
    time. The load average is noted before and after: on a loaded machine the spread is wide.
    """
    device = select_device(options.device)
    repeats = options.repeats or (3 if options.quick else 21)
    todo = guard_cases(options.quick)
    rng = np.random.default_rng(0)
    rows: list[list[Any]] = []
    results = []
    failures = []
    load = [os.getloadavg()[0]]
    progress.start(len(todo), "fft guard")
    with jax.default_device(device):
        for case in todo:
            x = jnp.asarray(rng.standard_normal(case.x, dtype=np.float32))
            w = jnp.asarray(
                rng.standard_normal(case.w, dtype=np.float32) / np.sqrt(np.prod(case.w[1:]))
            )
            plan = _fft_plan(case, x)
            y_shape = (plan.geo.n, plan.geo.c_out, *plan.geo.out)
            ct = jnp.asarray(rng.standard_normal(y_shape, dtype=np.float32))
            guarded = _output_and_grads(
                partial(
                    jaxconv.conv,
                    stride=case.stride,
                    padding=case.padding,
                    groups=case.groups,
                    method="fft",
                )
            )
            bare = _output_and_grads(_unguarded_fft(plan))
            checks = jax.jit(
                lambda x, w, ct, p=plan: [fft._magnitude(a, p.compute) for a in (x, w, ct)]
            )
            fns = {
                "unguarded": timing.blocking(bare, (x, w, ct)),
                "guarded": timing.blocking(guarded, (x, w, ct)),
                "checks": timing.blocking(checks, (x, w, ct)),
            }
            err = max(
                timing.rel_err(a, b)
                for a, b in zip(
                    jax.tree.leaves(fns["guarded"]()),
                    jax.tree.leaves(fns["unguarded"]()),
                    strict=True,
                )
            )
            if not err <= 1e-6:  # the same FFT code: only the exact power-of-two scaling differs
                failures.append(f"{case.name} (guarded and unguarded differ by {err:.1e})")
            cpu: dict[str, list[float]] = {name: [] for name in fns}
            clocked = {name: _cpu_clocked(fn, cpu[name]) for name, fn in fns.items()}
            samples = timing.time_round_robin(clocked, repeats=repeats, warmup=1, min_sample_s=0.05)
            g, u, c = samples["guarded"], samples["unguarded"], samples["checks"]
            q1, overhead, q3 = _quartiles([a / b - 1 for a, b in zip(g, u, strict=True)])
            med_u = statistics.median(u)
            # The warm-up and calibration calls are the first two of each.
            cpu_overhead = statistics.median(cpu["guarded"][2:]) / statistics.median(
                cpu["unguarded"][2:]
            )
            if not overhead < GUARD_GOAL:
                failures.append(f"{case.name} ({100 * overhead:+.1f}%)")
            rows.append(
                [
                    case.name,
                    1e3 * med_u,
                    1e3 * statistics.median(g),
                    100 * overhead,
                    f"[{100 * q1:+.1f}, {100 * q3:+.1f}]",
                    100 * (cpu_overhead - 1),
                    1e3 * statistics.median(c),
                    100 * statistics.median(c) / med_u,
                    err,
                ]
            )
            results.append(
                {
                    "case": case.name,
                    "samples_ms": {k: [1e3 * t for t in v] for k, v in samples.items()},
                    "cpu_ms": {k: [1e3 * t for t in v[2:]] for k, v in cpu.items()},
                }
            )
            progress.advance(f"fft guard: {case.name}")
    load.append(os.getloadavg()[0])
    verdict = f"goal (< {100 * GUARD_GOAL:g}% on every case): " + (
        "met" if not failures else "not met: " + ", ".join(failures)
    )
    return [
        Table(
            title="methods: cost of fft's non-finite guard (fwd+bwd, guarded vs unguarded)",
            columns=[
                "case",
                "unguarded ms",
                "guarded ms",
                "overhead %",
                "quartiles %",
                "cpu overhead %",
                "checks ms",
                "checks %",
                "max err",
            ],
            rows=rows,
            notes=[
                f"float32, {repeats} round-robin rounds; overhead: median over rounds of "
                "guarded/unguarded - 1 (wall time); cpu overhead: the same from the process's "
                "CPU time per call (ratio of medians), which other processes' load disturbs "
                "less; checks: the guard's reductions alone",
                f"load average (1 min) {load[0]:.1f} before, {load[1]:.1f} after, "
                f"on {os.cpu_count()} CPUs",
                verdict + (" [quick: tiny shapes, timings meaningless]" if options.quick else ""),
            ],
            passed=None if options.quick else not failures,
            data={"repeats": repeats, "load": load, "results": results},
        )
    ]
