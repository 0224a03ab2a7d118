"""Forward+backward time of every ``jaxconv.conv`` method against ``jax.grad`` of ``lax``.

A thin wrapper: the suite ships inside the package (``jaxconv/_bench/methods.py``, which documents
what it times and its goals) and this runs ``jaxconv bench --suite methods``; it takes the same
options (``--help``), e.g.

    python benchmarks/bench_methods.py --quick          # smoke sizes: seconds, timings meaningless
    python benchmarks/bench_methods.py --repeats 24 --json methods.json --plot methods.png
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from jaxconv._bench.cli import script
except ImportError:  # run from a checkout without `pip install -e .`: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from jaxconv._bench.cli import script


def main(argv: list[str] | None = None) -> int:
    return script("methods", argv)


if __name__ == "__main__":
    raise SystemExit(main())
