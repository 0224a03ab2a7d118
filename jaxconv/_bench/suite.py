"""The interface every benchmark suite follows, and the few helpers they share.

A suite is a module of this package with one entry point::

    def run(options: Options, progress: Progress) -> list[Table]: ...

- ``options`` is what the command line resolved (:class:`Options`). A suite reads
  ``options.quick`` (seconds-long smoke sizes: same kernels, strides and code paths, tiny
  shapes; its timings mean nothing), ``options.repeats`` (``None``: the suite's own default),
  ``options.device`` (resolve it with :func:`select_device`; run under
  ``jax.default_device``) and ``options.torch`` (time PyTorch as a column when
  :func:`torch_for` finds it; otherwise the column reads ``n/a``).
- ``progress`` is told the number of steps once (``progress.start(total, description)``),
  then each finished step (``progress.advance(description)``); a step is whatever the suite
  counts (a case, a compilation). :class:`NullProgress` ignores both.
- It returns :class:`Table` objects: the medians and ratios the command prints as a table,
  writes as JSON and draws as a bar chart of ``Table.ratios``. Cells are plain Python
  values, so every table serialises to JSON as it is: ``str`` (``""`` for a blank cell),
  ``int``, ``float``, or ``None`` for "not measured" (shown as ``n/a``). The command formats
  floats by column name: a column ending in ``ms`` with two decimals, one ending in ``err``
  as ``1.2e-05``, any other with three decimals.

A suite checks its contenders agree (against ``jax.grad`` of ``lax``) before it times them,
times them with :func:`jaxconv._bench.timing.time_round_robin`, and states whether its goals
were met in ``Table.passed`` and a note. It never raises on a missed goal.

Suites import jaxconv's public names only. The command finds them by module name
(``jaxconv._bench.cli.SUITES``); a suite ``X`` gets a wrapper script
``benchmarks/bench_X.py`` whose ``main(argv)`` returns
``jaxconv._bench.cli.script("X", argv)`` (the command's options, less ``--suite``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "NullProgress",
    "Options",
    "Progress",
    "Table",
    "select_device",
    "torch_for",
]


@dataclass(frozen=True)
class Options:
    """What the command line resolved, handed to every suite."""

    quick: bool = False
    """Seconds-long smoke sizes (same code paths, tiny shapes; timings meaningless)."""
    repeats: int | None = None
    """Timed samples per contender; ``None``: the suite's default."""
    device: str = "default"
    """``"default"`` (JAX's default device), ``"cpu"`` or ``"gpu"``."""
    torch: bool = True
    """Time PyTorch as a column when it is importable (and has the device JAX runs on)."""


@dataclass
class Table:
    """One table of results.

    ``rows`` are lists of cells in ``columns`` order; ``ratios`` maps a bar label to a
    speed-up, ``baseline time / jaxconv time`` (above 1: jaxconv is faster), and is what
    ``--plot`` draws; ``notes`` are lines printed under the table (environment, goal
    verdicts); ``passed`` is ``True``/``False`` when the suite has goals to judge and ``None``
    when it has none (or ``--quick`` made them meaningless); ``data`` holds anything more the
    JSON output should keep (raw samples, gradient errors), JSON-serialisable.
    """

    title: str
    columns: list[str]
    rows: list[list[Any]]
    ratios: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    passed: bool | None = None
    data: dict[str, Any] = field(default_factory=dict)


class Progress(Protocol):
    """Where a suite reports how far it got (the command draws a progress bar)."""

    def start(self, total: int, description: str) -> None:
        """A new phase of ``total`` steps begins."""

    def advance(self, description: str | None = None) -> None:
        """One step is done; ``description`` names the next one (or what just finished)."""


class NullProgress:
    """A :class:`Progress` that reports nothing (for scripts and tests)."""

    def start(self, total: int, description: str) -> None:
        del total, description

    def advance(self, description: str | None = None) -> None:
        del description


def select_device(which: str) -> Any:
    """The ``jax.Device`` for ``Options.device``: ``"default"``, ``"cpu"`` or ``"gpu"``.

    Raises:
      ValueError: ``which`` is not one of those, or JAX has no such backend here.
    """
    import jax

    if which == "default":
        return jax.devices()[0]
    if which not in ("cpu", "gpu"):
        raise ValueError(f"`device` must be 'default', 'cpu' or 'gpu', got {which!r}")
    try:
        return jax.devices(which)[0]
    except RuntimeError:
        raise ValueError(
            f"`device` {which!r}: JAX has no {which} backend here "
            f"(backends: {', '.join(sorted(_backends()))})"
        ) from None


def _backends() -> set[str]:
    import jax

    return {d.platform for d in jax.devices()} | {jax.default_backend()}


def torch_for(jax_platform: str, enabled: bool = True) -> tuple[Any, str]:
    """PyTorch on the device matching JAX's: ``(torch, "cpu" | "cuda")``, or ``(None, why)``.

    On the CPU it uses every core (``torch.set_num_threads(os.cpu_count())``), as XLA does.
    """
    if not enabled:
        return None, "left out by --no-torch"
    try:
        import torch
    except ImportError:
        return None, "torch is not installed"
    if jax_platform == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
        return torch, "cpu"
    if jax_platform in ("gpu", "cuda") and torch.cuda.is_available():
        return torch, "cuda"
    return None, f"torch {torch.__version__} has no {jax_platform} device here"
