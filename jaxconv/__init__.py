"""jaxconv: convolution and pooling for JAX with hand-derived, property-tested VJPs."""

from ._shapes import conv_output_shape as conv_output_shape
from ._shapes import padding_pairs as padding_pairs
from .convolution import MethodChoice as MethodChoice
from .convolution import MethodCost as MethodCost
from .convolution import conv as conv
from .convolution import conv_general_dilated as conv_general_dilated
from .convolution import conv_input_grad as conv_input_grad
from .convolution import conv_transpose as conv_transpose
from .convolution import conv_weight_grad as conv_weight_grad
from .convolution import explain_method as explain_method
from .pool import adaptive_avg_pool as adaptive_avg_pool
from .pool import adaptive_max_pool as adaptive_max_pool
from .pool import avg_pool as avg_pool
from .pool import lp_pool as lp_pool
from .pool import max_pool as max_pool
from .pool import max_unpool as max_unpool

__version__ = "0.1.0"

__all__ = [
    "MethodChoice",
    "MethodCost",
    "adaptive_avg_pool",
    "adaptive_max_pool",
    "avg_pool",
    "conv",
    "conv_general_dilated",
    "conv_input_grad",
    "conv_output_shape",
    "conv_transpose",
    "conv_weight_grad",
    "explain_method",
    "lp_pool",
    "max_pool",
    "max_unpool",
    "padding_pairs",
]
