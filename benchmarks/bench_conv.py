"""Forward+backward time of ``jaxconv.conv`` against ``jax.grad`` of ``lax`` (and PyTorch).

    python benchmarks/bench_conv.py                 # the six cases of the core issue
    python benchmarks/bench_conv.py --quick         # tiny shapes, 2 repeats: a smoke test
    python benchmarks/bench_conv.py --device gpu --repeats 21 --json out.json

What is timed, for each case and contender: one jitted call returning the gradients with
respect to ``x``, ``w`` and ``bias`` of ``sum(conv(x, w, bias) * ct)`` for a fixed random
cotangent ``ct`` -- the forward and the whole backward, as in a training step. Contenders:

- ``direct``: ``jaxconv.conv(..., method="direct")`` (hand-derived VJP);
- ``auto``:   ``jaxconv.conv(..., method="auto")``;
- ``lax``:    ``jax.grad`` of ``lax.conv_general_dilated`` + bias (XLA's own transpose rules);
- ``torch``:  ``torch.nn.functional.conv{1,2,3}d`` forward + ``torch.autograd.grad``, on the
  CPU with ``os.cpu_count()`` threads when JAX runs on the CPU, on CUDA when JAX runs on a
  GPU and PyTorch has CUDA; otherwise "n/a".

All float32, channels-first. Contenders are timed round-robin (see
``jaxconv/_bench/timing.py``); each number is the median of ``--repeats`` samples after
warm-up. Before timing, every
contender's gradients (PyTorch's too) are checked against ``lax``'s, so the table never
compares computations that disagree.

Goal (issue 2): geometric-mean ``direct/lax <= 1.05`` and no case above ``1.15``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

# JAX must not grab most of a GPU's memory up front when PyTorch shares the device.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

try:
    import jaxconv
except ImportError:  # run from a checkout without `pip install -e .`: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import jaxconv
from jaxconv._bench import timing as _timing  # noqa: E402

GEOMEAN_GOAL = 1.05
CASE_GOAL = 1.15


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


def _jaxconv_grad(case: Case, method: str) -> Callable[..., Any]:
    def loss(x, w, b, ct):
        y = jaxconv.conv(
            x, w, b, stride=case.stride, padding=case.padding, dilation=case.dilation,
            groups=case.groups, method=method,
        )
        return jnp.sum(y * ct)

    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def _lax_grad(case: Case) -> Callable[..., Any]:
    n = case.ndim

    def loss(x, w, b, ct):
        y = lax.conv_general_dilated(
            x, w,
            window_strides=(case.stride,) * n,
            padding=((case.padding, case.padding),) * n,
            rhs_dilation=(case.dilation,) * n,
            dimension_numbers=None,  # channels-first, like jaxconv's default
            feature_group_count=case.groups,
        )
        return jnp.sum((y + b.reshape((1, -1) + (1,) * n)) * ct)

    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def _torch_device(jax_platform: str) -> tuple[Any, str | None]:
    """(torch module, torch device) -- or (None, reason it is n/a)."""
    try:
        import torch
    except ImportError:
        return None, "torch is not installed"
    if jax_platform == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
        return torch, "cpu"
    if jax_platform in ("gpu", "cuda") and torch.cuda.is_available():
        return torch, "cuda"
    return None, f"torch has no {jax_platform} device here (torch {torch.__version__})"


def _torch_grad(torch: Any, case: Case, arrays: Sequence[np.ndarray], device: str):
    """A blocking closure computing PyTorch's forward+backward, and its gradients once."""
    fn = getattr(torch.nn.functional, f"conv{case.ndim}d")
    x, w, b, ct = (torch.from_numpy(np.array(a)).to(device) for a in arrays)
    for t in (x, w, b):
        t.requires_grad_(True)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def run():
        y = fn(x, w, b, stride=case.stride, padding=case.padding, dilation=case.dilation,
               groups=case.groups)
        grads = torch.autograd.grad(y, (x, w, b), grad_outputs=ct)
        sync()
        return grads

    grads = tuple(g.detach().cpu().numpy() for g in run())
    return run, grads


# --------------------------------------------------------------------------- running


def _rel_err(actual: Any, expected: Any) -> float:
    a, e = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(a - e)) / max(float(np.max(np.abs(e))), 1e-30))


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


def prepare(cases_: Sequence[Case], device: Any) -> list[Prepared]:
    """Trace every JAX contender of every case, then compile them all, in parallel.

    Tracing holds the GIL, XLA's compiler does not: compiling on all cores at once roughly
    divides the start-up time (most of a ``--quick`` run) by the number of cores. Only on
    the CPU: on a GPU, compiling autotunes convolution algorithms by timing them on the
    device, and concurrent autotuning would skew those timings -- and so the algorithms
    each contender ends up with.
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
    workers = (os.cpu_count() or 1) if device.platform == "cpu" else 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        executables = list(pool.map(lambda job: job[2].compile(), jobs))
    compiled: list[dict[str, Any]] = [{} for _ in todo]
    for (i, name, _), exe in zip(jobs, executables, strict=True):
        compiled[i][name] = exe
    return [Prepared(case, host, args, compiled[i]) for i, (case, host, args, _) in enumerate(todo)]


def run_case(
    prepared: Prepared,
    torch_dev: tuple[Any, str | None],
    repeats: int,
    min_sample_s: float,
    warmup: int,
) -> dict[str, Any]:
    """Check every contender's gradients against ``lax``'s, then time them round-robin."""
    case, host, args = prepared.case, prepared.host, prepared.args
    fns: dict[str, Callable[[], Any]] = {
        name: (lambda exe=exe: _timing.block(exe(*args)))
        for name, exe in prepared.compiled.items()
    }
    reference = [np.asarray(r) for r in fns["lax"]()]
    errors = {
        name: max(_rel_err(a, r) for a, r in zip(fns[name](), reference, strict=True))
        for name in ("direct", "auto")
    }
    torch, torch_device = torch_dev
    if torch is not None:
        fns["torch"], torch_grads = _torch_grad(torch, case, host, torch_device)
        errors["torch"] = max(
            _rel_err(a, r) for a, r in zip(torch_grads, reference, strict=True)
        )
    samples = _timing.time_round_robin(
        fns, repeats=repeats, warmup=warmup, min_sample_s=min_sample_s
    )
    ms = {name: 1e3 * _timing.summarize(s)["median"] for name, s in samples.items()}
    ratios = {f"{m}/lax": ms[m] / ms["lax"] for m in ("direct", "auto")}
    ratios["direct/torch"] = ms["direct"] / ms["torch"] if "torch" in ms else math.nan
    return {
        "case": dataclasses.asdict(case),
        "ms": ms,
        "samples_ms": {name: [1e3 * t for t in s] for name, s in samples.items()},
        "ratios": ratios,
        "max_rel_err_vs_lax": errors,
    }


def _fmt(value: float, spec: str) -> str:
    return "n/a" if value is None or math.isnan(value) else format(value, spec)


def format_table(results: list[dict[str, Any]], geo: dict[str, float]) -> str:
    """A Markdown table: milliseconds per contender, ratios, worst gradient error."""
    header = ["case", "direct ms", "auto ms", "lax ms", "torch ms",
              "direct/lax", "auto/lax", "direct/torch", "max err"]
    rows = []
    for r in results:
        ms, ratios = r["ms"], r["ratios"]
        rows.append([
            r["case"]["name"],
            *(_fmt(ms.get(m, math.nan), ".2f") for m in ("direct", "auto", "lax", "torch")),
            *(_fmt(ratios[k], ".3f") for k in ("direct/lax", "auto/lax", "direct/torch")),
            _fmt(max(r["max_rel_err_vs_lax"].values()), ".1e"),
        ])
    rows.append(["geo-mean", "", "", "", "",
                 *(_fmt(geo[k], ".3f") for k in ("direct/lax", "auto/lax", "direct/torch")), ""])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = [c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths,
                                                                                 strict=True))]
        return "| " + " | ".join(padded) + " |"

    sep = "|" + "|".join(
        "-" * (w + 1) + ":" if i else ":" + "-" * (w + 1) for i, w in enumerate(widths)
    ) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def _finite(obj: Any) -> Any:
    """NaN (a ratio against an absent contender) becomes ``null``, keeping the JSON strict."""
    if isinstance(obj, float):
        return None if math.isnan(obj) else obj
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _select_device(which: str) -> Any:
    if which == "default":
        return jax.devices()[0]
    platform_name = {"cpu": "cpu", "gpu": "gpu"}[which]
    try:
        return jax.devices(platform_name)[0]
    except RuntimeError as e:
        raise SystemExit(f"--device {which}: JAX has no {which} backend here ({e})") from None


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench_conv.py",
        description="Jitted forward+backward time of jaxconv.conv vs jax.grad of lax "
        "(and PyTorch), with the issue's speed goal.",
    )
    p.add_argument("--quick", action="store_true", help="tiny shapes, 2 repeats (smoke test)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed samples per contender (default 12, whole cycles of the "
                   "balanced order; 2 with --quick)")
    p.add_argument("--json", metavar="PATH", default=None, help="also write the results as JSON")
    p.add_argument("--device", choices=("cpu", "gpu", "default"), default="default",
                   help="where JAX (and PyTorch, when it can) runs (default: JAX's default)")
    p.add_argument("--min-sample-ms", type=float, default=None,
                   help="minimum duration of one sample (default 20; 0 with --quick)")
    p.add_argument("--check", action="store_true",
                   help="exit with status 1 when the goal is missed")
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 2 if args.quick else 12
    if args.repeats < 1:
        p.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.min_sample_ms is None:
        args.min_sample_ms = 0.0 if args.quick else 20.0
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table and the goal line; returns the exit status."""
    args = _parse(argv)
    device = _select_device(args.device)
    torch_dev = _torch_device(device.platform)
    torch_note = (
        f"torch {torch_dev[0].__version__} on {torch_dev[1]}"
        + (f" ({torch_dev[0].get_num_threads()} threads)" if torch_dev[1] == "cpu" else "")
        if torch_dev[0] is not None
        else f"torch: n/a ({torch_dev[1]})"
    )
    print(
        f"jaxconv {jaxconv.__version__} | jax {jax.__version__} on {device.device_kind} "
        f"({device.platform}) | {torch_note} | {platform.machine()}, {os.cpu_count()} CPUs | "
        f"float32, median of {args.repeats} round-robin samples",
        flush=True,
    )
    results = []
    with jax.default_device(device):
        print("  compiling ...", file=sys.stderr, flush=True)
        for prepared in prepare(cases(args.quick), device):
            print(f"  {prepared.case.name} ...", file=sys.stderr, flush=True)
            # The gradient check already ran each compiled contender once; --quick needs
            # no further warm-up, a real run takes one more untimed round.
            results.append(run_case(prepared, torch_dev, args.repeats,
                                    args.min_sample_ms / 1e3, warmup=0 if args.quick else 1))
    geo = {
        k: _timing.geomean(r["ratios"][k] for r in results)
        for k in ("direct/lax", "auto/lax", "direct/torch")
    }
    print(format_table(results, geo))

    tol = 2e-3 if device.platform == "cpu" else 2e-2  # GPUs may run float32 convs as TF32
    bad = [
        f"{r['case']['name']} ({name}: {err:.1e})"
        for r in results for name, err in r["max_rel_err_vs_lax"].items() if not err <= tol
    ]
    worst = max(results, key=lambda r: r["ratios"]["direct/lax"])
    passed = (
        geo["direct/lax"] <= GEOMEAN_GOAL
        and worst["ratios"]["direct/lax"] <= CASE_GOAL
        and not bad
    )
    print(
        f"{'PASS' if passed else 'FAIL'}: geo-mean jaxconv(direct)/lax = "
        f"{geo['direct/lax']:.3f} (goal <= {GEOMEAN_GOAL}), worst case "
        f"{worst['case']['name']} = {worst['ratios']['direct/lax']:.3f} (goal <= {CASE_GOAL})"
        + (f"; gradients disagree with lax beyond {tol:g}: {', '.join(bad)}" if bad else "")
        + (" [--quick: tiny shapes, timings meaningless]" if args.quick else "")
    )
    if args.json:
        payload = {
            "benchmark": "conv forward+backward",
            "jaxconv": jaxconv.__version__,
            "jax": jax.__version__,
            "device": {"platform": device.platform, "kind": device.device_kind},
            "torch": torch_note,
            "cpu_count": os.cpu_count(),
            "repeats": args.repeats,
            "quick": args.quick,
            "results": results,
            "geomean": geo,
            "goal": {"geomean_max": GEOMEAN_GOAL, "case_max": CASE_GOAL, "passed": passed},
        }
        Path(args.json).write_text(json.dumps(_finite(payload), indent=2) + "\n")
    return 1 if (args.check and not passed) else 0


if __name__ == "__main__":
    raise SystemExit(main())
