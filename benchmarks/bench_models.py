"""Train-step time of three small CNNs on jaxconv's ops against lax's (and PyTorch's).

A thin wrapper: the suite ships inside the package (``jaxconv/_bench/models.py``, which
documents what it times, the peak-memory column and the per-layer breakdown, and its goals)
and this runs ``jaxconv bench --suite models``; it takes the same options (``--help``) plus
a few of its own, e.g.

    python benchmarks/bench_models.py --quick                 # smoke sizes, timings meaningless
    python benchmarks/bench_models.py --networks mobilenet,convnext --layers
    python benchmarks/bench_models.py --layouts NHWC --no-breakdown --json models.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    from jaxconv._bench import models
    from jaxconv._bench.cli import script
except ImportError:  # run from a checkout without `pip install -e .`: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from jaxconv._bench import models
    from jaxconv._bench.cli import script


def _own_flags() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--networks", default=",".join(models.Settings().networks))
    p.add_argument("--layouts", default=",".join(models.LAYOUTS))
    p.add_argument("--no-breakdown", action="store_true")
    p.add_argument("--layers", action="store_true")
    return p


HELP = """
models suite flags:
  --networks A,B   which networks (default: mobilenet,convnext,resnet)
  --layouts A,B    JAX layouts, NCHW and/or NHWC; the breakdown uses the first (default: both)
  --no-breakdown   leave out the per-layer breakdown tables (the slow part)
  --layers         also list every distinct layer with its own times
"""


def main(argv: list[str] | None = None) -> int:
    args, rest = _own_flags().parse_known_args(sys.argv[1:] if argv is None else argv)
    if "-h" in rest or "--help" in rest:
        status = script("models", rest)
        print(HELP)
        return status
    networks = tuple(n for n in args.networks.split(",") if n)
    layouts = tuple(x.upper() for x in args.layouts.split(",") if x)
    bad = [n for n in networks if n not in models.Settings().networks]
    bad += [x for x in layouts if x not in models.LAYOUTS]
    if bad or not networks or not layouts:
        print(
            f"bench_models.py: error: unknown network or layout: {bad or 'none given'}",
            file=sys.stderr,
        )
        return 2
    with models.settings(
        networks=networks, layouts=layouts, breakdown=not args.no_breakdown, layers=args.layers
    ):
        return script("models", rest)


if __name__ == "__main__":
    raise SystemExit(main())
