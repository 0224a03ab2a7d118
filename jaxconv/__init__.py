"""jaxconv: convolution and pooling for JAX with hand-derived, property-tested VJPs."""

from ._conv import conv as conv
from ._conv_transpose import conv_transpose as conv_transpose
from ._conv_vjp import conv_input_grad as conv_input_grad
from ._conv_vjp import conv_weight_grad as conv_weight_grad
from ._general import conv_general_dilated as conv_general_dilated
from ._shapes import conv_output_shape as conv_output_shape
from ._shapes import padding_pairs as padding_pairs

__version__ = "0.1.0"

__all__ = [
    "conv",
    "conv_general_dilated",
    "conv_input_grad",
    "conv_output_shape",
    "conv_transpose",
    "conv_weight_grad",
    "padding_pairs",
]
