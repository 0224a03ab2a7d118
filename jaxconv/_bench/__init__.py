"""The benchmark suites behind ``jaxconv bench``: private, shipped with the package so that a
pip-installed user can measure the speed-ups on their own machine.

This package owns the timing method (``timing``: compile up front, round-robin interleaved
samples, medians), the interface every suite follows (``suite``: ``Options`` in, ``Table``
out, a ``Progress`` to report to), the suites themselves (one module each: ``conv``,
``methods``, ``pool``, ``models``) and the command line that runs them (``cli``). The scripts
in the repository's ``benchmarks/`` folder are thin wrappers around these modules. Suites use
jaxconv's public API only, exactly as a user would.
"""
