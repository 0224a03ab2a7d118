"""Forward+backward time of every ``jaxconv.conv`` method against ``jax.grad`` of ``lax``.

A thin wrapper: the suite ships inside the package (``jaxconv/_bench/methods.py``, which documents
what it times and its goals) and this runs ``jaxconv bench --suite methods``; it takes the same
options (``--help``), e.g.

    python benchmarks/bench_methods.py --quick          # smoke sizes: seconds, timings meaningless
    python benchmarks/bench_methods.py --repeats 24 --json methods.json --plot methods.png

``--guard`` prints another table instead: what ``method="fft"``'s non-finite guard costs on
the suite's fft cases, against the same FFT code unguarded (``jaxconv._bench.methods.guard``;
goal: under 3%). It takes ``--quick``, ``--repeats N`` and ``--json PATH``:

    python benchmarks/bench_methods.py --guard --repeats 41
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

try:
    from jaxconv._bench.cli import script
except ImportError:  # run from a checkout without `pip install -e .`: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from jaxconv._bench.cli import script


class _Log:
    """Progress as one line on stderr per finished step."""

    def start(self, total: int, description: str) -> None:
        print(f"{description}: {total} cases", file=sys.stderr)

    def advance(self, description: str | None = None) -> None:
        print(f"  done: {description}", file=sys.stderr)


def _cell(column: str, value: object) -> str:
    if isinstance(value, float):
        return f"{value:.1e}" if column.endswith("err") else f"{value:.2f}"
    return str(value)


def guard(argv: list[str]) -> int:
    """Run and print the guard table; 0 when the goal is met (or not judged), else 1."""
    from jaxconv._bench.methods import guard as guard_tables
    from jaxconv._bench.suite import Options

    parser = argparse.ArgumentParser(prog="bench_methods.py")
    parser.add_argument("--guard", action="store_true", required=True)
    parser.add_argument("--quick", action="store_true", help="smoke sizes, timings meaningless")
    parser.add_argument("--repeats", type=int, metavar="N", help="round-robin rounds (>= 1)")
    parser.add_argument("--json", metavar="PATH", help="write the table as JSON")
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    tables = guard_tables(Options(quick=args.quick, repeats=args.repeats), _Log())
    for table in tables:
        print(table.title)
        cells = [table.columns] + [
            [_cell(c, v) for c, v in zip(table.columns, row, strict=True)] for row in table.rows
        ]
        widths = [max(len(r[i]) for r in cells) for i in range(len(table.columns))]
        for r in cells:
            print(
                "  ".join(
                    v.rjust(n) if i else v.ljust(n)
                    for i, (v, n) in enumerate(zip(r, widths, strict=True))
                )
            )
        for note in table.notes:
            print(note)
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(t) for t in tables], indent=2) + "\n")
    return 1 if any(t.passed is False for t in tables) else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--guard" in argv:
        return guard(argv)
    return script("methods", argv)


if __name__ == "__main__":
    raise SystemExit(main())
