"""Convolution: the forward op, its two hand-derived gradient rules, and everything built on them.

- :mod:`.api`: the public ``conv`` -- validates, builds one frozen :class:`~._config.ConvConfig`
  and hands the arrays to a method;
- :mod:`.methods`: the method registry (``direct``, ``fft``, ``shift``) and ``auto``'s cost model;
- :mod:`.grads`: dL/dX and dL/dW as convolutions (the lecture's derivation), private rules and
  their public faces ``conv_input_grad``/``conv_weight_grad``;
- :mod:`.transpose` (``conv_transpose``), :mod:`.general` (the ``lax.conv_general_dilated``
  drop-in), :mod:`.padding_modes` (reflect/replicate/circular and their adjoints);
- :mod:`._config`: argument validation into configs (pure ints lives in ``jaxconv._shapes``).

The subpackage is named ``convolution`` rather than ``conv`` so that ``jaxconv.conv`` stays the
function.
"""

from __future__ import annotations

from .api import conv as conv
from .general import conv_general_dilated as conv_general_dilated
from .grads import conv_input_grad as conv_input_grad
from .grads import conv_weight_grad as conv_weight_grad
from .methods.auto import MethodChoice as MethodChoice
from .methods.auto import explain_method as explain_method
from .methods.registry import MethodCost as MethodCost
from .transpose import conv_transpose as conv_transpose

__all__ = [
    "MethodChoice",
    "MethodCost",
    "conv",
    "conv_general_dilated",
    "conv_input_grad",
    "conv_transpose",
    "conv_weight_grad",
    "explain_method",
]
