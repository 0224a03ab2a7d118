"""The ``jaxconv verify`` sweep: every public op (and every registered conv method) on one
harness, each configuration drawn from its own random stream.

:func:`plan` covers every op once before it repeats any (so ``--examples 13`` runs each of
today's 13 ops once), then repeats them with weights that favour the ops with the most
configuration space.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np

from ..convolution.methods import registry
from .conv_cases import CONV_OPS, CaseResult, run_case
from .pool_cases import POOL_OPS, run_pool_case

__all__ = ["OPS", "Op", "ops", "plan", "sweep"]


@dataclasses.dataclass(frozen=True)
class Op:
    """One row of the sweep: its label, its weight in the repeats, and how to run a case."""

    name: str
    weight: int
    run: Callable[[np.random.Generator, bool], CaseResult]


def _conv(method: str) -> Callable[[np.random.Generator, bool], CaseResult]:
    return lambda rng, f32: run_case("conv", rng, float32=f32, method=method)


def _conv_op(op: str) -> Callable[[np.random.Generator, bool], CaseResult]:
    return lambda rng, f32: run_case(op, rng, float32=f32)


def _pool(op: str) -> Callable[[np.random.Generator, bool], CaseResult]:
    def run(rng: np.random.Generator, _: bool) -> CaseResult:
        t0 = time.perf_counter()
        d = run_pool_case(op, rng)
        return CaseResult(
            op=d["op"],
            config=d["config"],
            rel_err={d["dtype"]: d["rel_err"]},
            fd_rel_err=d.get("fd_rel_err"),
            passed=bool(d["passed"]),
            seconds=time.perf_counter() - t0,
        )

    return run


_CONV_WEIGHTS = {"conv_transpose": 2, "conv_input_grad": 1, "conv_weight_grad": 1}


def ops() -> tuple[Op, ...]:
    """Every op of the sweep, read from the method registry at call time."""
    conv = [Op("conv", 4, _conv("auto"))]
    conv += [Op(f"conv[{m}]", 2, _conv(m)) for m in registry.names() if m != "direct"]
    conv += [Op(name, _CONV_WEIGHTS.get(name, 2), _conv_op(name)) for name in CONV_OPS]
    return (*conv, *(Op(name, 1, _pool(name)) for name in POOL_OPS))


OPS = ops()


def plan(examples: int) -> list[Op]:
    """Which op each of ``examples`` configurations exercises: every op once, then repeats."""
    table = ops()
    repeats = [op for op in table for _ in range(op.weight)]
    order = list(table) + [repeats[i % len(repeats)] for i in range(max(examples - len(table), 0))]
    return order[:examples]


def _one(op: Op, index: int, seed: int) -> CaseResult:
    rng = np.random.default_rng([seed, index])  # each case its own stream: order-free
    return op.run(rng, index % 2 == 0)


def sweep(seed: int, examples: int, workers: int = 1) -> Iterator[CaseResult]:
    """Yield one :class:`CaseResult` per configuration (in completion order).

    Each configuration is drawn from its own stream ``(seed, index)``, so the set of cases
    does not depend on ``workers``; threads overlap XLA compilations, which dominate.
    """
    todo = plan(examples)
    if workers <= 1:
        for i, op in enumerate(todo):
            yield _one(op, i, seed)
        return
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(_one, op, i, seed) for i, op in enumerate(todo)]
        for fut in as_completed(futures):
            yield fut.result()
