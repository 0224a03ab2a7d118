"""jaxconv: convolution and pooling for JAX with hand-derived, property-tested VJPs."""

from ._conv import conv as conv
from ._shapes import conv_output_shape as conv_output_shape
from ._shapes import padding_pairs as padding_pairs

__version__ = "0.1.0"

__all__ = [
    "conv",
    "conv_output_shape",
    "padding_pairs",
]
