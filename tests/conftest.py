"""Test configuration: strict JAX promotion rules and Hypothesis profiles.

Profiles: ``ci`` (loaded automatically when ``CI`` is set; derandomized, bounded),
``dev`` (fast local default) and ``thorough`` (``HYPOTHESIS_PROFILE=thorough`` for long runs).
"""

from __future__ import annotations

import os

import jax
from hypothesis import HealthCheck, settings

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

_common = dict(
    deadline=None,  # the first example of each test pays for jit compilation
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Hypothesis registers a built-in "ci" profile (derandomized, no database, print_blob);
# extend it rather than replace it.
settings.register_profile("ci", settings.get_profile("ci"), max_examples=20, **_common)
settings.register_profile("dev", max_examples=10, **_common)
settings.register_profile("thorough", max_examples=300, derandomize=False, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
