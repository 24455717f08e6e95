"""reversible.torch: exact hypergradients of a PyTorch model's training run.

``params_T = reversible.torch.sgd(train_loss, params0, alphas, betas, meta)``
trains with SGD with momentum and returns a differentiable result: the
gradient of anything computed from ``params_T`` with respect to ``params0``,
``v0``, ``alphas``, ``betas`` and ``meta`` is exact (the training run is
reversed bit for bit in fixed point, in O(N) memory).  CPU tensors run on the
NumPy / numba engine, CUDA tensors on the CuPy kernels of
:mod:`reversible.gpu`.  Needs the ``torch`` extra
(``pip install "reversible-learning[torch]"``); ``import reversible`` never
imports torch.
"""

try:
    import torch as _torch  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised only without torch
    raise ImportError("reversible.torch needs PyTorch: pip install \"reversible-learning[torch]\" "
                      "(or pip install torch)") from err

from .adam import adam
from .sgd import sgd
from .tree import TensorTree

__all__ = ["sgd", "adam", "TensorTree"]
