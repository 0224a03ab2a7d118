"""Forward+backward time of jaxconv's pools against ``jax.grad`` of ``lax.reduce_window``.

    python benchmarks/bench_pool.py                 # the issue's max-pool and avg-pool cases
    python benchmarks/bench_pool.py --quick         # tiny shapes, 2 repeats: a smoke test
    python benchmarks/bench_pool.py --device gpu --repeats 21 --json out.json

What is timed, per case and contender: one jitted call returning ``d/dx sum(pool(x) * ct)``
for a fixed random cotangent ``ct`` -- forward and backward, as in a training step.
Contenders:

- ``jaxconv``: ``max_pool`` / ``avg_pool`` (hand-derived VJPs);
- ``lax``:     ``jax.grad`` of ``lax.reduce_window`` (max; or add, divided by the window);
- ``torch``:   ``torch.nn.functional.{max,avg}_pool2d`` + ``torch.autograd.grad`` on the CPU
  with ``os.cpu_count()`` threads when JAX runs on the CPU, on CUDA when JAX runs on a GPU
  and PyTorch has CUDA; otherwise "n/a".

All float32, channels-first, round-robin timing (see ``jaxconv/_bench/timing.py``), medians
after warm-up.
Before timing, jaxconv's gradient is checked against lax's (and PyTorch's).

Goals (issue 3), CPU float32: max pool 2x2/2 >= 5x faster than lax, 3x3/2 pad 1 >= 4x,
3x3/1 pad 1 >= 3x, and faster than PyTorch in all three; average pooling at least as fast
as lax.
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
from pathlib import Path
from typing import Any

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

try:
    from jaxconv import _pool
except ImportError:  # run from a checkout without `pip install -e .`: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from jaxconv import _pool
from jaxconv._bench import timing as _timing  # noqa: E402


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
    geometry = [("2x2/2", 2, 2, 0, 5.0), ("3x3/2 p1", 3, 2, 1, 4.0), ("3x3/1 p1", 3, 1, 1, 3.0)]
    out = []
    for op in ("max", "avg"):
        for shape, (label, k, s, p, goal) in zip(shapes, geometry, strict=True):
            dims = "x".join(map(str, shape))
            out.append(
                Case(f"{op} {label} {dims}", op, shape, k, s, p, goal if op == "max" else 1.0)
            )
    return out


def _jaxconv_grad(case: Case) -> Callable[..., Any]:
    def loss(x, ct):
        if case.op == "max":
            y = _pool.max_pool(x, case.window, case.stride, case.padding)
        else:
            y = _pool.avg_pool(x, case.window, case.stride, case.padding)
        return jnp.sum(y * ct)

    return jax.jit(jax.grad(loss))


def _lax_grad(case: Case) -> Callable[..., Any]:
    dims = (1, 1, case.window, case.window)
    strides = (1, 1, case.stride, case.stride)
    pads = ((0, 0), (0, 0), (case.padding, case.padding), (case.padding, case.padding))

    def loss(x, ct):
        if case.op == "max":
            y = lax.reduce_window(x, -jnp.inf, lax.max, dims, strides, pads)
        else:  # PyTorch's default count_include_pad=True: divide by the full window
            y = lax.reduce_window(x, 0.0, lax.add, dims, strides, pads) / case.window**2
        return jnp.sum(y * ct)

    return jax.jit(jax.grad(loss))


def _torch_device(jax_platform: str) -> tuple[Any, str | None]:
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


def _rel_err(actual: Any, expected: Any) -> float:
    a, e = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(a - e)) / max(float(np.max(np.abs(e))), 1e-30))


def run_case(case: Case, device: Any, torch_dev, repeats: int, min_sample_s: float) -> dict:
    rng = np.random.default_rng(len(case.name))
    x = rng.standard_normal(case.x_shape, dtype=np.float32)  # continuous: no ties
    ct = rng.standard_normal(case.out_shape, dtype=np.float32)
    args = [jax.device_put(a, device) for a in (x, ct)]
    grads = {"jaxconv": _jaxconv_grad(case), "lax": _lax_grad(case)}
    fns: dict[str, Callable[[], Any]] = {
        name: (lambda g=g: _timing.block(g(*args))) for name, g in grads.items()
    }
    reference = np.asarray(fns["lax"]())
    errors = {"jaxconv": _rel_err(fns["jaxconv"](), reference)}
    torch, torch_device = torch_dev
    if torch is not None:
        fns["torch"], torch_g = _torch_grad(torch, case, x, ct, torch_device)
        errors["torch"] = _rel_err(torch_g, reference)
    samples = _timing.time_round_robin(fns, repeats=repeats, min_sample_s=min_sample_s)
    ms = {name: 1e3 * _timing.summarize(s)["median"] for name, s in samples.items()}
    return {
        "case": dataclasses.asdict(case),
        "ms": ms,
        "speedup_vs_lax": ms["lax"] / ms["jaxconv"],
        "speedup_vs_torch": ms["torch"] / ms["jaxconv"] if "torch" in ms else math.nan,
        "max_rel_err_vs_lax": errors,
    }


def _fmt(value: float, spec: str) -> str:
    return "n/a" if value is None or math.isnan(value) else format(value, spec)


def format_table(results: list[dict[str, Any]]) -> str:
    header = [
        "case",
        "jaxconv ms",
        "lax ms",
        "torch ms",
        "lax/jaxconv",
        "goal",
        "torch/jaxconv",
        "max err",
    ]
    rows = []
    for r in results:
        ms = r["ms"]
        rows.append(
            [
                r["case"]["name"],
                *(_fmt(ms.get(m, math.nan), ".2f") for m in ("jaxconv", "lax", "torch")),
                _fmt(r["speedup_vs_lax"], ".2f") + "x",
                f">= {r['case']['goal']:g}x",
                _fmt(r["speedup_vs_torch"], ".2f")
                + ("x" if not math.isnan(r["speedup_vs_torch"]) else ""),
                _fmt(max(r["max_rel_err_vs_lax"].values()), ".1e"),
            ]
        )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    sep = (
        "|"
        + "|".join("-" * (w + 1) + ":" if i else ":" + "-" * (w + 1) for i, w in enumerate(widths))
        + "|"
    )
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def _select_device(which: str) -> Any:
    if which == "default":
        return jax.devices()[0]
    try:
        return jax.devices(which)[0]
    except RuntimeError as e:
        raise SystemExit(f"--device {which}: JAX has no {which} backend here ({e})") from None


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench_pool.py",
        description="Jitted forward+backward time of jaxconv's max/avg pool vs jax.grad of "
        "lax.reduce_window (and PyTorch), with the issue's speed goals.",
    )
    p.add_argument("--quick", action="store_true", help="tiny shapes, 2 repeats (smoke test)")
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed samples per contender (default 9; 2 with --quick)",
    )
    p.add_argument("--json", metavar="PATH", default=None, help="also write the results as JSON")
    p.add_argument(
        "--device",
        choices=("cpu", "gpu", "default"),
        default="default",
        help="where JAX (and PyTorch, when it can) runs (default: JAX's default)",
    )
    p.add_argument(
        "--min-sample-ms",
        type=float,
        default=None,
        help="minimum duration of one sample (default 50; 0 with --quick)",
    )
    p.add_argument("--check", action="store_true", help="exit with status 1 when a goal is missed")
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 2 if args.quick else 9
    if args.repeats < 1:
        p.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.min_sample_ms is None:
        args.min_sample_ms = 0.0 if args.quick else 50.0
    return args


def main(argv: Sequence[str] | None = None) -> int:
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
        f"jax {jax.__version__} on {device.device_kind} ({device.platform}) | {torch_note} | "
        f"{platform.machine()}, {os.cpu_count()} CPUs | float32, median of {args.repeats} "
        "round-robin samples",
        flush=True,
    )
    results = []
    with jax.default_device(device):
        for case in cases(args.quick):
            print(f"  {case.name} ...", file=sys.stderr, flush=True)
            results.append(
                run_case(case, device, torch_dev, args.repeats, args.min_sample_ms / 1e3)
            )
    print(format_table(results))
    tol = 1e-6
    missed = []
    for r in results:
        name = r["case"]["name"]
        if r["speedup_vs_lax"] < r["case"]["goal"]:
            missed.append(f"{name}: {r['speedup_vs_lax']:.2f}x vs lax")
        if r["case"]["op"] == "max" and r["speedup_vs_torch"] < 1.0:
            missed.append(f"{name}: {r['speedup_vs_torch']:.2f}x vs torch")
        if not r["max_rel_err_vs_lax"]["jaxconv"] <= tol:
            missed.append(f"{name}: gradient differs from lax by {r['max_rel_err_vs_lax']}")
    passed = not missed
    print(
        ("PASS: every goal met" if passed else "FAIL: " + "; ".join(missed))
        + (" [--quick: tiny shapes, timings meaningless]" if args.quick else "")
    )
    if args.json:
        payload = {
            "benchmark": "pool forward+backward",
            "jax": jax.__version__,
            "device": {"platform": device.platform, "kind": device.device_kind},
            "torch": torch_note,
            "cpu_count": os.cpu_count(),
            "repeats": args.repeats,
            "quick": args.quick,
            "results": results,
            "passed": passed,
        }
        text = json.dumps(payload, indent=2, default=lambda v: None)
        Path(args.json).write_text(text.replace("NaN", "null") + "\n")
    return 1 if (args.check and not passed) else 0


if __name__ == "__main__":
    raise SystemExit(main())
