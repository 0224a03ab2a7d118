"""The ``jaxconv`` command line.

``jaxconv verify`` sweeps random configurations of every public op and compares the
hand-derived VJPs with ``jax.grad`` of ``lax`` and with finite differences (exit 1 on a
mismatch); ``jaxconv bench`` runs the benchmark suites (:mod:`jaxconv._bench.cli`). Bad
arguments get one line and exit 2, before anything runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="jaxconv", description="Convolution and pooling for JAX with hand-derived VJPs."
    )
    parser.add_argument("--version", action="version", version=f"jaxconv {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "bench",
        help="time the ops and small networks against jax.grad of lax (and PyTorch)",
        add_help=False,  # `jaxconv bench --help` is the bench command's own
    )
    verify = sub.add_parser(
        "verify",
        help="compare every hand-derived VJP with jax.grad of lax and with finite differences",
        description=(
            "A seeded sweep of random configurations across every public op: values and VJPs "
            "against jax.grad of lax (float64 and float32) and central finite differences "
            "(float64). Exits 1 on any mismatch."
        ),
    )
    verify.add_argument("--seed", type=int, default=0, help="random seed >= 0 (default 0)")
    verify.add_argument(
        "--examples",
        type=int,
        default=240,
        help="number of configurations (default 240); the first ones cover every op once",
    )
    verify.add_argument("--json", metavar="PATH", help="also write every result to PATH as JSON")
    verify.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="threads overlapping XLA compilations (default: CPU count)",
    )
    return parser


def _verify(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from ._verify.conv_cases import FD_TOLERANCE
    from ._verify.sweep import ops as all_ops
    from ._verify.sweep import plan, sweep
    from ._verify.tolerances import TOLERANCE

    console = Console(width=None if sys.stdout.isatty() else 120)
    ops = [op.name for op in plan(args.examples)]
    results = []
    start = time.perf_counter()
    with Progress(
        TextColumn("[bold]verify"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("", total=len(ops))
        for res in sweep(args.seed, args.examples, workers=max(1, args.workers)):
            results.append(res)
            progress.update(task, advance=1, description=escape(res.op))
            if not res.passed:
                progress.console.print(
                    f"[red]FAIL[/red] {escape(res.op)}: {escape(res.config)} {res.rel_err} "
                    f"fd={res.fd_rel_err}"
                )
    elapsed = time.perf_counter() - start

    order = list(dict.fromkeys(ops))
    dtypes = ["float64", "float32"]
    table = Table(
        title=f"jaxconv verify — seed {args.seed}, {len(results)} configurations, {elapsed:.1f} s"
    )
    table.add_column("op")
    table.add_column("configs", justify="right")
    for d in dtypes:
        table.add_column(f"{d} worst rel err\n(tol {TOLERANCE[d]:g})", justify="right")
    table.add_column(f"finite diff. worst\n(float64, tol {FD_TOLERANCE:g})", justify="right")
    table.add_column("result")
    summary = []
    for op in order:
        rs = [r for r in results if r.op == op]
        worst = {d: max((r.rel_err[d] for r in rs if d in r.rel_err), default=None) for d in dtypes}
        fds = [r.fd_rel_err for r in rs if r.fd_rel_err is not None]
        worst_fd = max(fds) if fds else None
        ok = all(r.passed for r in rs)
        summary.append(dict(op=op, configs=len(rs), worst=worst, worst_fd=worst_fd, passed=ok))
        table.add_row(
            escape(op),
            str(len(rs)),
            *("—" if worst[d] is None else f"{worst[d]:.2e}" for d in dtypes),
            "—" if worst_fd is None else f"{worst_fd:.2e}",
            "[green]pass[/green]" if ok else "[red]FAIL[/red]",
        )
    console.print(table)
    _report_coverage(console, ops, [op.name for op in all_ops()])
    failed = sum(not r.passed for r in results)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                dict(
                    seed=args.seed,
                    examples=len(results),
                    seconds=elapsed,
                    failed=failed,
                    summary=summary,
                    results=[
                        dict(
                            op=r.op,
                            config=r.config,
                            rel_err=r.rel_err,
                            fd_rel_err=r.fd_rel_err,
                            passed=r.passed,
                            seconds=r.seconds,
                        )
                        for r in results
                    ],
                ),
                fh,
                indent=1,
            )
    if failed:
        console.print(f"[red bold]{failed} of {len(results)} configurations FAILED[/red bold]")
        return 1
    console.print(f"[green bold]all {len(results)} configurations agree[/green bold]")
    return 0


def _report_coverage(console, ops: list[str], every: list[str]) -> None:
    from rich.markup import escape

    missed = [op for op in every if op not in ops]
    line = f"ops covered ({len(set(ops))} of {len(every)}): {', '.join(dict.fromkeys(ops))}"
    console.print(escape(line))
    if missed:
        console.print(
            escape(f"not covered (raise --examples to {len(every)}): {', '.join(missed)}")
        )


def _check_verify_args(args: argparse.Namespace) -> str | None:
    """The first bad ``verify`` argument, as one line, or ``None``."""
    if args.seed < 0:
        return f"`--seed` must be >= 0, got {args.seed}"
    if args.examples < 1:
        return f"`--examples` must be >= 1, got {args.examples}"
    if args.workers < 1:
        return f"`--workers` must be >= 1, got {args.workers}"
    if args.json:
        folder = os.path.dirname(os.path.abspath(args.json))
        if os.path.isdir(args.json):
            return f"`--json` must name a file, got the directory {args.json!r}"
        if not os.path.isdir(folder):
            return f"`--json`'s directory does not exist: {folder!r}"
        if not os.access(folder, os.W_OK):
            return f"`--json`'s directory is not writable: {folder!r}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # the bench command parses its own options
        from ._bench.cli import main as bench

        return bench(argv[1:], prog="jaxconv bench")
    args = _parser().parse_args(argv)
    if args.command == "verify":
        problem = _check_verify_args(args)
        if problem is not None:
            print(f"jaxconv verify: error: {problem}", file=sys.stderr)
            return 2
        return _verify(args)
    return 2  # pragma: no cover - argparse enforces the sub-command


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
