"""Forward+backward time of jaxconv's max/avg pools against ``jax.grad`` of ``lax.reduce_window``.

A thin wrapper: the suite ships inside the package (``jaxconv/_bench/pool.py``, which documents
what it times and its goals) and this runs ``jaxconv bench --suite pool``; it takes the same
options (``--help``), e.g.

    python benchmarks/bench_pool.py --quick          # smoke sizes: seconds, timings meaningless
    python benchmarks/bench_pool.py --repeats 24 --json pool.json --plot pool.png
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
    return script("pool", argv)


if __name__ == "__main__":
    raise SystemExit(main())
