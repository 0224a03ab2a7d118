"""Forward+backward time of every ``jaxconv.conv`` method against ``jax.grad`` of ``lax``.

Run ``python benchmarks/bench_methods.py`` (``--quick`` for a smoke run with batch 1 and a
single timed round). For each case it times, side by side in one run, the jitted
forward+backward (output and both gradients for a fixed random cotangent) of
``lax.conv_general_dilated`` under JAX autodiff, of ``jaxconv.conv`` with each method
(``direct``, ``fft``, ``shift``; ``-`` where a method does not support the case) and with
``auto``, and of PyTorch when it is importable (on the CPU, or on CUDA when JAX runs on a
GPU; ``n/a`` otherwise). Rounds are interleaved (each round times every column once, in a
random order) and the median is reported, so load from other processes hits every column
alike. Then it prints the speed-ups over ``lax``, the method ``auto`` picked, and the check
that ``auto`` is within 5% of the best single method.

Goals (issue 4, on this 2-core CPU): 31x31 >= 8x faster than lax, 13x13 >= 2x, depthwise
>= 10x and faster than PyTorch CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jaxconv  # noqa: E402
from jaxconv._methods.auto import explain_method  # noqa: E402

METHODS = ("direct", "fft", "shift")


@dataclass(frozen=True)
class Case:
    name: str
    x: tuple[int, ...]  # (N, C_in, *spatial)
    w: tuple[int, ...]  # (C_out, C_in // groups, *kernel)
    stride: int = 1
    padding: int | str = 0
    groups: int = 1
    goal: str = ""  # e.g. ">=8x lax"


CASES = (
    # issue 4
    Case("31x31 SAME", (8, 16, 64, 64), (16, 16, 31, 31), padding="SAME", goal="lax>=8x"),
    Case("13x13 SAME", (8, 32, 64, 64), (32, 32, 13, 13), padding="SAME", goal="lax>=2x"),
    Case(
        "dw 3x3 g64", (16, 64, 32, 32), (64, 1, 3, 3), padding=1, groups=64, goal="lax>=10x,>torch"
    ),
    # the core benchmark
    Case("resnet 3x3", (16, 64, 32, 32), (64, 64, 3, 3), padding=1),
    Case("stem 7x7/2", (8, 3, 112, 112), (64, 3, 7, 7), stride=2, padding=3),
    Case("1x1", (16, 256, 16, 16), (64, 256, 1, 1)),
    Case("1-D k5", (16, 64, 1024), (64, 64, 5), padding=2),
    Case("3-D 3x3x3", (4, 16, 16, 16, 16), (16, 16, 3, 3, 3), padding=1),
)


def _lax_padding(case: Case) -> object:
    if isinstance(case.padding, str):
        return case.padding
    return [(case.padding, case.padding)] * (len(case.x) - 2)


def _jax_fn(case: Case, method: str | None) -> Callable:
    """Jitted ``(x, w, ct) -> (y, dx, dw)`` for a method, or for lax when ``method`` is None."""
    nd = len(case.x) - 2
    if method is None:

        def f(x, w):
            return lax.conv_general_dilated(
                x,
                w,
                (case.stride,) * nd,
                _lax_padding(case),
                feature_group_count=case.groups,
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


def _torch_fn(case: Case, x, w, ct) -> Callable | None:
    try:
        import torch
    except ImportError:
        return None
    nd = len(case.x) - 2
    conv = {
        1: torch.nn.functional.conv1d,
        2: torch.nn.functional.conv2d,
        3: torch.nn.functional.conv3d,
    }[nd]
    pad = case.padding.lower() if isinstance(case.padding, str) else case.padding
    device = _torch_device()
    tx = torch.tensor(np.asarray(x), device=device, requires_grad=True)
    tw = torch.tensor(np.asarray(w), device=device, requires_grad=True)
    tct = torch.tensor(np.asarray(ct), device=device)

    def run():
        tx.grad = tw.grad = None
        y = conv(tx, tw, stride=case.stride, padding=pad, groups=case.groups)
        y.backward(tct)
        if device == "cuda":
            torch.cuda.synchronize()
        return y, tx.grad, tw.grad

    return run


def _torch_device() -> str:
    """PyTorch runs where JAX runs: CUDA when JAX is on a GPU and torch sees one, else CPU."""
    import torch

    if jax.default_backend() == "gpu" and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def _block(out) -> None:
    for a in out:
        if hasattr(a, "block_until_ready"):
            a.block_until_ready()


def _time_rounds(fns: dict[str, Callable | None], rounds: int) -> dict[str, float | None]:
    """Median seconds per column; each round times every column once, in a fresh random
    order (a column timed right after a slow one runs measurably slower on a loaded
    2-core machine, so a fixed order would bias the comparison)."""
    for fn in fns.values():  # warm-up: compile and touch memory
        if fn is not None:
            _block(fn())
            _block(fn())
    samples: dict[str, list[float]] = {k: [] for k in fns}
    order = np.random.default_rng(1)
    names = [k for k, fn in fns.items() if fn is not None]
    for _ in range(rounds):
        for k in order.permutation(names):
            fn = fns[k]
            t0 = time.perf_counter()
            _block(fn())
            samples[str(k)].append(time.perf_counter() - t0)
    return {k: (statistics.median(v) if v else None) for k, v in samples.items()}


def _fmt_ms(t: float | None) -> str:
    return "-" if t is None else f"{1e3 * t:9.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 1, one timed round")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 7)")
    parser.add_argument("--cases", default="", help="comma-separated substrings of case names")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 7)
    wanted = [s.strip() for s in args.cases.split(",") if s.strip()]

    backend = jax.default_backend()
    try:
        import torch

        peer = f"torch {torch.__version__} on {_torch_device()}"
    except ImportError:
        peer = "torch not installed"
    print(
        f"jax {jax.__version__} on {backend} ({jax.devices()[0].device_kind}), "
        f"{os.cpu_count()} CPUs, {peer}; median of {rounds} interleaved rounds, times in ms"
    )
    header = (
        f"{'case':<12} {'lax':>9} {'direct':>9} {'fft':>9} {'shift':>9} {'auto':>9} "
        f"{'torch':>9} | {'auto pick':<9} {'lax/auto':>8} {'torch/auto':>10} "
        f"{'auto/best':>9} goal"
    )
    print(header)
    print("-" * len(header))
    failures = []
    rng = np.random.default_rng(0)
    for case in CASES:
        if wanted and not any(s in case.name for s in wanted):
            continue
        if args.quick:
            case = Case(
                case.name,
                (1,) + case.x[1:],
                case.w,
                case.stride,
                case.padding,
                case.groups,
                case.goal,
            )
        x = jnp.asarray(rng.standard_normal(case.x, dtype=np.float32))
        scale = 1 / np.sqrt(np.prod(case.w[1:]))
        w = jnp.asarray(rng.standard_normal(case.w, dtype=np.float32) * scale)
        choice = explain_method(case.x, case.w, case.stride, case.padding, 1, case.groups)
        y_shape = jax.eval_shape(
            lambda x, w, c=case: jaxconv.conv(
                x, w, stride=c.stride, padding=c.padding, groups=c.groups
            ),
            x,
            w,
        ).shape
        ct = jnp.asarray(rng.standard_normal(y_shape, dtype=np.float32))
        fns: dict[str, Callable | None] = {}
        jitted = {"lax": _jax_fn(case, None)}
        for m in METHODS + ("auto",):
            if m != "auto" and choice.costs.get(m) is None:
                jitted[m] = None  # the method does not support this case
            else:
                jitted[m] = _jax_fn(case, m)
        for k, fn in jitted.items():
            fns[k] = None if fn is None else (lambda fn=fn, x=x, w=w, ct=ct: fn(x, w, ct))
        fns["torch"] = _torch_fn(case, x, w, ct)
        t = _time_rounds(fns, rounds)
        best = min(t[m] for m in METHODS if t[m] is not None)
        # auto compiles to exactly the program of the method it picks (same HLO; see
        # tests/test_methods.py), so both columns time one program: take the better of the two
        # medians, which strips the noise of a loaded machine from the 5% check.
        auto_best = min(t["auto"], t[choice.method]) / best
        lax_auto = t["lax"] / t["auto"]
        torch_auto = None if t["torch"] is None else t["torch"] / t["auto"]
        ok = auto_best <= 1.05
        goal = case.goal
        if goal and args.quick:
            goal += " (not judged: --quick)"
        elif goal and backend != "cpu":
            goal += " (a CPU goal: not judged)"
        elif goal:
            need = {"31x31 SAME": 8.0, "13x13 SAME": 2.0, "dw 3x3 g64": 10.0}[case.name]
            ok_goal = lax_auto >= need and (
                "torch" not in goal or torch_auto is None or torch_auto > 1.0
            )
            goal += " ok" if ok_goal else " MISSED"
            if not ok_goal:
                failures.append(case.name)
        if not ok and not args.quick:
            failures.append(case.name + " (auto/best)")
        print(
            f"{case.name:<12} {_fmt_ms(t['lax'])} {_fmt_ms(t['direct'])} {_fmt_ms(t['fft'])} "
            f"{_fmt_ms(t['shift'])} {_fmt_ms(t['auto'])} "
            f"{'n/a' if t['torch'] is None else _fmt_ms(t['torch']):>9} | "
            f"{choice.method:<9} {lax_auto:7.2f}x "
            f"{'n/a' if torch_auto is None else f'{torch_auto:9.2f}x':>10} "
            f"{auto_best:8.2f}{' ' if ok else '!'} {goal}",
            flush=True,
        )
    print("-" * len(header))
    print(
        "auto/best: the time of auto's program (auto's or its pick's column, the same HLO)"
        " over the fastest single method (<= 1.05 passes; '!' marks a miss)."
    )
    print("lax/auto, torch/auto: speed-ups of auto.")
    if failures:
        print("not met:", ", ".join(failures))
    else:
        print("all goals met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
