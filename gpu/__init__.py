"""reversible.gpu: the exact engine on CuPy, bit for bit with the NumPy reference.

* :func:`sgd` (SGD with momentum) and :func:`adam` (Adam / AdamW) train exactly
  on the GPU and return a :class:`~reversible.gpu.loop.Trained` whose
  ``hypergradient(dw_T)`` runs training backwards for exact hypergradients;
* :func:`train_plain` is the plain float64 SGD baseline;
* :class:`MLP` is a network written once for NumPy or CuPy, with its gradient and
  Hessian-vector products (Pearlmutter's R-operator).

Importing this package never imports CuPy; the functions that need the GPU
raise :class:`GPUUnavailableError` (an ImportError) with install instructions
when CuPy or a CUDA device is missing.
"""

from ._cupy import GPUUnavailableError, has_cuda, require_cupy
from .adam_front import adam
from .front import check_args, sgd, train_plain
from .loop import Trained
from .mlp import MLP

__all__ = ["sgd", "adam", "train_plain", "Trained", "MLP", "check_args", "GPUUnavailableError",
           "has_cuda", "require_cupy"]
