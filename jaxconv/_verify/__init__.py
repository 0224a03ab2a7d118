"""Verification: everything that checks the ops against independent references.

- :mod:`.lax_reference`: the ops written with ``lax`` (``jax.grad`` of them is the oracle);
- :mod:`.pool_loops`: the pools as plain NumPy loops (the conv loops are the public
  :mod:`jaxconv.reference`, which re-exports these);
- :mod:`.strategies`: Hypothesis strategies (re-exported by the public :mod:`jaxconv.testing`);
- :mod:`.tolerances`: the one per-dtype tolerance table and the relative error it bounds;
- :mod:`.conv_cases`, :mod:`.pool_cases`, :mod:`.sweep`: the ``jaxconv verify`` harness
  (random configurations, values and VJPs against lax and finite differences). It never needs
  Hypothesis.
"""
