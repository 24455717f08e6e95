"""A :class:`reversible.problem.Problem` whose derivatives come from a PyTorch loss.

The hypergradient methods (``exact`` and the approximate ones) work on a
Problem's flat float64 NumPy vectors and its ``grad`` / ``vjp`` callables.
:class:`TorchProblem` supplies those callables from :class:`LossDerivatives`,
exchanging vectors with PyTorch without copies: ``torch.from_numpy`` views the
engine's NumPy buffer, and the gradients are written straight into a NumPy
buffer through its tensor view.
"""

from dataclasses import dataclass, field

import numpy as np
import torch

from ..problem import Problem


def as_tensor(x):
    """A CPU float64 tensor sharing memory with the NumPy vector ``x`` (or None)."""
    if x is None:
        return None
    x = np.ascontiguousarray(x, dtype=np.float64)
    if not x.flags.writeable:          # torch.from_numpy warns on read-only memory
        x = x.copy()
    return torch.from_numpy(x)


def as_numpy(x):
    """The NumPy view of a CPU float64 tensor (no copy)."""
    return None if x is None else x.detach().numpy()


class TorchDerivatives:
    """Mixin: a Problem's ``grad``, ``vjp`` and ``grad_then_hvp`` run by ``self.derivatives``
    (a :class:`~reversible.torch.derivatives.LossDerivatives`) on the NumPy vectors' memory."""

    def __post_init__(self):
        # Problem.grad calls _grad (then checks step 0's resolution): here it runs torch
        self._grad = lambda w, meta, t: as_numpy(self.derivatives.grad(as_tensor(w),
                                                                       as_tensor(meta), t))

    def vjp(self, w, meta, t, u):
        g, hw, hm = self.derivatives.vjp(as_tensor(w), as_tensor(meta), t, as_tensor(u))
        return as_numpy(g), as_numpy(hw), as_numpy(hm)

    def grad_then_hvp(self, w, meta, t, vector):
        """``(g, H_ww u, H_meta,w u)`` with ``u = vector(g)`` (NumPy in and out), one taped gradient."""
        def vector_t(g):
            return as_tensor(vector(as_numpy(g)))
        g, hw, hm = self.derivatives.grad_then_hvp(as_tensor(w), as_tensor(meta), t, vector_t)
        return as_numpy(g), as_numpy(hw), as_numpy(hm)


@dataclass
class TorchProblem(TorchDerivatives, Problem):
    """A Problem on CPU vectors whose derivatives run a PyTorch loss."""

    derivatives: object = field(default=None, repr=False)
