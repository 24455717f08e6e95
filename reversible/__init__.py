"""reversible: exact hypergradients through training by reversible SGD with momentum."""

from . import checkpoint
from .adam_api import adam
from .api import sgd
from .grading import compare
from .buffer import InfoBuffer, effective_beta, quantize_beta
from .errors import (BufferUnderflowError, CheckpointError, FixedPointOverflowError,
                     NonFiniteError, ResolutionWarning, ReversibilityError, ReversibleError)
from .fixedpoint import ExactArray
from .meta import MetaResult, optimize

__version__ = "0.2.0"

__all__ = ["sgd", "adam", "compare", "optimize", "MetaResult", "InfoBuffer", "ExactArray", "effective_beta", "quantize_beta",
           "ReversibleError", "ReversibilityError", "BufferUnderflowError",
           "FixedPointOverflowError", "NonFiniteError", "CheckpointError", "ResolutionWarning"]
