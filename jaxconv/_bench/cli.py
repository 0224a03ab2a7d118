"""``jaxconv bench``: run the benchmark suites, show the medians and ratios, save them.

The command checks every argument before it runs anything (a bad one gets a one-line message
and exit status 2), runs the chosen suites with a progress bar on stderr, prints each suite's
table with its notes, and, when asked, writes every table as JSON (``--json``) and a bar chart
of the speed-ups as a PNG (``--plot``, needs matplotlib). ``python -m jaxconv._bench.cli``
runs it too.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

from .suite import Options, Table, select_device, torch_for

# JAX must not grab most of a GPU's memory up front when PyTorch shares the device. Read when
# JAX starts its backend, which nothing has done when this module is imported by the command.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

SUITES = ("conv", "pool", "methods", "models")
"""Every suite, in the order ``quick`` and ``full`` run them (one module each)."""
ALL = ("quick", "full")

SUITES_HELP = """\
suites:
  quick    every suite at smoke size: seconds per suite, timings meaningless
  full     every suite at its real size (minutes on a CPU)
  conv     jaxconv.conv (direct, auto) vs jax.grad of lax.conv_general_dilated
  pool     jaxconv.max_pool / avg_pool vs jax.grad of lax.reduce_window
  methods  every conv method (direct, fft, shift, auto) on large-kernel and depthwise cases
  models   train steps of small CNNs (MobileNetV2-, ConvNeXt-, ResNet-style) on jaxconv ops
           vs the same networks on lax ops

"""
HOW = """\
Every contender is a jitted forward+backward, compiled up front and checked against lax
before it is timed; contenders are timed round-robin, and tables report medians. PyTorch
(CPU, or CUDA when JAX runs on a GPU) is a column when it is installed.
"""
EXAMPLES = """
examples:
  jaxconv bench                                   # the quick suite
  jaxconv bench --suite conv --repeats 24 --json conv.json
  jaxconv bench --suite full --plot speedups.png  # needs matplotlib
"""


class _UsageError(Exception):
    """A bad argument: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _parser(prog: str, suite: str | None) -> argparse.ArgumentParser:
    """The options; ``suite`` fixed (a ``benchmarks/`` wrapper) leaves ``--suite`` out."""
    p = _Parser(
        prog=prog,
        description="Time jaxconv's ops against jax.grad of lax (and PyTorch) on this machine.",
        epilog=SUITES_HELP + HOW + EXAMPLES if suite is None else HOW,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if suite is None:
        p.add_argument(
            "--suite",
            choices=(*ALL, *SUITES),
            default="quick",
            help="what to run (default: quick; see below)",
        )
    else:
        p.set_defaults(suite=suite)
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke sizes: seconds, timings meaningless (--suite quick implies it)",
    )
    p.add_argument("--json", metavar="PATH", help="write every table (and raw samples) as JSON")
    p.add_argument(
        "--plot", metavar="PATH", help="write a PNG bar chart of the speed-ups (needs matplotlib)"
    )
    p.add_argument(
        "--repeats",
        metavar="N",
        type=int,
        help="timed samples per contender (default: each suite's own)",
    )
    p.add_argument(
        "--device",
        choices=("default", "cpu", "gpu"),
        default="default",
        help="where JAX (and PyTorch, when it can) runs (default: JAX's default device)",
    )
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out even if installed")
    p.add_argument(
        "--check",
        action="store_true",
        help="exit with status 1 when a goal is missed or gradients disagree (a quick run "
        "judges the gradients only)",
    )
    return p


def _writable_file(flag: str, path: str) -> Path:
    target = Path(path)
    if target.is_dir():
        raise _UsageError(f"{flag} {path}: is a directory, expected a file path")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise _UsageError(f"{flag} {path}: directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise _UsageError(f"{flag} {path}: not writable")
    return target


def _load_suite(name: str) -> tuple[ModuleType | None, str | None]:
    """The suite's module, or ``(None, why not)``; ``why`` is ``None`` when this jaxconv does
    not ship the suite at all (a suite added later), a sentence when what it needs is missing.
    """
    module = f"{__package__}.{name}"
    try:
        return importlib.import_module(module), None
    except ImportError as e:
        if e.name == module:
            return None, None
        return None, f"the {name} suite needs {e.name or 'a package'} ({e})"


def _resolve(
    argv: Sequence[str] | None, prog: str, suite: str | None
) -> tuple[argparse.Namespace, list[ModuleType]]:
    """Parse and check every argument; load the suites. Raises ``_UsageError``."""
    args = _parser(prog, suite).parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        raise _UsageError(f"--repeats must be >= 1, got {args.repeats}")
    if args.json:
        args.json = _writable_file("--json", args.json)
    if args.plot:
        args.plot = _writable_file("--plot", args.plot)
        try:
            importlib.import_module("matplotlib")
        except ImportError:
            raise _UsageError(
                "--plot needs matplotlib: pip install matplotlib (or jaxconv[examples])"
            ) from None
    try:
        select_device(args.device)
    except ValueError as e:
        message = str(e).replace(f"`device` {args.device!r}: ", "")
        raise _UsageError(f"--device {args.device}: {message}") from None
    if args.suite in ALL:
        names = list(SUITES)
    else:
        names = [args.suite]
    suites, skipped = [], []
    for name in names:
        module, why = _load_suite(name)
        if module is not None:
            suites.append(module)
        elif args.suite not in ALL:
            why = why or f"the {name} suite is not part of this jaxconv version"
            raise _UsageError(f"--suite {name}: {why}")
        elif why is not None:  # quick/full leave an unshipped suite out silently
            skipped.append(why)
    args.skipped = skipped
    return args, suites


# --------------------------------------------------------------------------- output


def _cell(column: str, value: Any) -> str:
    """Floats by column: ``... ms`` two decimals, ``... err`` ``.1e``, others three decimals."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        if column.endswith("ms"):
            return f"{value:.2f}"
        if column.endswith("err"):
            return f"{value:.1e}"
        return f"{value:.3f}"
    return str(value)


def _render(table: Table, console: Any) -> None:
    from rich import box
    from rich.markup import escape
    from rich.table import Table as RichTable

    passed = {True: " [green]PASS[/green]", False: " [red]FAIL[/red]", None: ""}[table.passed]
    out = RichTable(
        title=f"[bold]{escape(table.title)}[/bold]{passed}",
        box=box.SIMPLE_HEAVY if console.is_terminal else box.MARKDOWN,
        title_justify="left",
    )
    for i, column in enumerate(table.columns):
        out.add_column(escape(column), justify="left" if i == 0 else "right", no_wrap=True)
    for row in table.rows:
        out.add_row(*(escape(_cell(c, v)) for c, v in zip(table.columns, row, strict=True)))
    console.print(out)
    for note in table.notes:
        console.print(escape(note), soft_wrap=True)
    console.print()


def _finite(obj: Any) -> Any:
    """NaN and infinities become ``null``, keeping the JSON strict."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _environment(options: Options) -> dict[str, Any]:
    import platform

    import jax

    import jaxconv

    device = select_device(options.device)
    torch, where = torch_for(device.platform, options.torch)
    return {
        "jaxconv": jaxconv.__version__,
        "jax": jax.__version__,
        "device": {"platform": device.platform, "kind": device.device_kind},
        "torch": f"{torch.__version__} on {where}" if torch is not None else f"n/a ({where})",
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }


def _write_json(path: Path, env: dict[str, Any], options: Options, tables: list[Table]) -> None:
    payload = {
        "environment": env,
        "options": asdict(options),
        "tables": [asdict(t) for t in tables],
    }
    path.write_text(json.dumps(_finite(payload), indent=2, allow_nan=False) + "\n")


def _write_plot(path: Path, tables: list[Table], env: dict[str, Any], quick: bool) -> None:
    """One horizontal bar per ratio, grouped by table, on a log axis with a line at 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = [t for t in tables if t.ratios]
    heights = [max(1, len(t.ratios)) for t in drawn] or [1]
    fig, axes = plt.subplots(
        len(heights),
        1,
        figsize=(8, 1.2 + 0.28 * sum(heights) + 0.6 * len(heights)),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    for ax, table in zip(axes[:, 0], drawn, strict=False):
        labels = list(table.ratios)
        values = [table.ratios[k] for k in labels]
        colors = ["tab:green" if v >= 1.0 else "tab:red" for v in values]
        # Bars grow from 1 (no difference): right when jaxconv is faster, left when slower.
        ax.barh(range(len(values)), [v - 1.0 for v in values], left=1.0, color=colors)
        ax.set_yticks(range(len(values)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.axvline(1.0, color="black", linewidth=0.8)
        lo, hi = min([*values, 1.0]), max([*values, 1.0])
        ax.set_xlim(lo / 2.5, hi * 2.5)  # room for the labels on a log axis
        for y, v in enumerate(values):
            ax.annotate(
                f"{v:.2f}x",
                (v, y),
                xytext=(3 if v >= 1.0 else -3, 0),
                textcoords="offset points",
                ha="left" if v >= 1.0 else "right",
                va="center",
                fontsize=7,
            )
        ax.set_title(table.title, fontsize=9, loc="left")
    if not drawn:
        axes[0, 0].text(0.5, 0.5, "no ratios measured", ha="center", va="center")
        axes[0, 0].set_axis_off()
    axes[-1, 0].set_xlabel("speed-up of jaxconv (baseline time / jaxconv time; > 1: faster)")
    fig.suptitle(
        f"jaxconv {env['jaxconv']}, jax {env['jax']} on {env['device']['kind']}"
        + (" (quick: smoke sizes, timings meaningless)" if quick else ""),
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- running


class _RichProgress:
    """The suites' :class:`~jaxconv._bench.suite.Progress` as a rich progress bar: one bar
    per phase a suite starts."""

    def __init__(self, progress: Any) -> None:
        self._progress = progress
        self._task: Any = None

    def start(self, total: int, description: str) -> None:
        from rich.markup import escape

        self.finish()
        self._task = self._progress.add_task(escape(description), total=total, status="")

    def advance(self, description: str | None = None) -> None:
        from rich.markup import escape

        if self._task is None:
            return
        fields = {} if description is None else {"status": escape(description)}
        self._progress.update(self._task, advance=1, **fields)

    def finish(self) -> None:
        if self._task is not None:
            task = self._progress.tasks[self._task]
            self._progress.update(self._task, completed=task.total, status="")
            self._task = None


def main(
    argv: Sequence[str] | None = None, *, prog: str = "jaxconv bench", suite: str | None = None
) -> int:
    """Run ``jaxconv bench``; returns the exit status (0 ok, 1 ``--check`` failed, 2 usage).

    ``suite`` runs that suite only, without a ``--suite`` option (the ``benchmarks/`` wrappers).
    """
    try:
        args, suites = _resolve(argv, prog, suite)
    except _UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else 0

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    options = Options(
        quick=args.quick or args.suite == "quick",
        repeats=args.repeats,
        device=args.device,
        torch=not args.no_torch,
    )
    out = Console(width=None if sys.stdout.isatty() else 240)
    err = Console(stderr=True)
    env = _environment(options)
    out.print(
        f"jaxconv {env['jaxconv']} | jax {env['jax']} on {env['device']['kind']} "
        f"({env['device']['platform']}) | torch {env['torch']} | {env['machine']}, "
        f"{env['cpu_count']} CPUs" + (" | quick: smoke sizes" if options.quick else ""),
        highlight=False,
        soft_wrap=True,
    )
    for why in args.skipped:
        out.print(f"left out: {why}", highlight=False, soft_wrap=True)
    tables: list[Table] = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=err,
        transient=True,
    ) as bar:
        progress = _RichProgress(bar)
        for module in suites:
            tables += module.run(options, progress)
            progress.finish()
    for table in tables:
        _render(table, out)
    if args.json:
        _write_json(args.json, env, options, tables)
        out.print(f"wrote {args.json}", highlight=False)
    if args.plot:
        _write_plot(args.plot, tables, env, options.quick)
        out.print(f"wrote {args.plot}", highlight=False)
    failed = [t.title for t in tables if t.passed is False]
    return 1 if (args.check and failed) else 0


def script(suite: str, argv: Sequence[str] | None = None) -> int:
    """``main`` for one suite, as the ``benchmarks/bench_<suite>.py`` wrappers run it."""
    return main(argv, prog=f"bench_{suite}.py", suite=suite)


if __name__ == "__main__":
    raise SystemExit(main())
