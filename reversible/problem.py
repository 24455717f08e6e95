"""A training problem on flat vectors: what every hypergradient method works on.

:func:`reversible.sgd` builds a :class:`Problem` from the user's autograd loss
and hands it to the chosen method.  It carries the (unboxed) hyperparameters,
the schedules as ``(T, G)`` arrays, and the derivatives of the training loss
that methods need, each computed by autograd once per call:

* ``grad(w, meta, t) -> g``;
* ``vjp(w, meta, t, u) -> (g, H_ww u, H_meta,w u)``: by default one
  forward-over-reverse pass (the cheapest Hessian-vector product autograd
  offers), falling back to reverse-over-reverse for operations without a
  forward-mode rule.
"""

from dataclasses import dataclass, field

import autograd.numpy as anp
import numpy as np
from autograd import grad as ag_grad
from autograd import make_jvp, make_vjp

from .buffer import effective_beta
from .resolution import check_first_step
from .trajectory import Schedule


@dataclass
class Problem:
    loss: object                 # loss(w_flat, meta_flat, t) -> scalar (autograd.numpy)
    w0: np.ndarray
    v0: np.ndarray
    alphas: np.ndarray           # (T, G)
    betas: np.ndarray            # (T, G), as given (the engine applies effective_beta)
    meta: object                 # flat float64 vector or None
    group_index: np.ndarray
    frac_bits: int
    kernel: str = "auto"
    progress: bool = False
    hvp: str = "auto"            # "forward", "reverse" or "auto"
    check_resolution: bool = False   # check frac_bits against step 0's increments (fixed point)
    first_step_rounding: object = None   # set by that check (see reversible.resolution)
    _grad: object = field(default=None, repr=False)
    _grad_both: object = field(default=None, repr=False)

    @classmethod
    def from_containers(cls, train_loss, structure, meta_structure, **fields):
        """A problem for ``train_loss(w, meta, t)`` written on the user's containers.

        ``structure`` / ``meta_structure`` (:class:`~reversible.structure.Structure`)
        rebuild the containers from the flat vectors the methods work on; their
        unflatten is differentiable at O(N) cost per gradient or Hessian product.
        """
        def loss(w, meta, t):
            m = None if meta_structure is None else meta_structure.unflatten(meta)
            return train_loss(structure.unflatten(w), m, t)
        return cls(loss=loss, group_index=structure.group_index(), **fields)

    def __post_init__(self):
        self._grad = ag_grad(self.loss, 0)
        if self.meta is not None:
            self._grad_both = ag_grad(self.loss, (0, 1))

    @property
    def T(self):
        return self.alphas.shape[0]

    @property
    def G(self):
        return self.alphas.shape[1]

    @property
    def N(self):
        return self.w0.size

    @property
    def meta_size(self):
        return 0 if self.meta is None else self.meta.size

    def schedule(self):
        return Schedule.build(self.alphas, self.betas, self.group_index, self.G)

    def effective_betas(self):
        return effective_beta(self.betas)

    def per_element(self, row):
        return row[self.group_index]

    # ------------------------------------------------------- derivatives
    def grad(self, w, meta, t):
        g = np.asarray(self._grad(w, meta, t), dtype=np.float64)
        if self.check_resolution and t == 0:
            self.check_resolution = False          # once: step 0 of the forward pass
            alpha, beta = self.alphas[0], effective_beta(self.betas[0])
            if self.G == 1:
                alpha, beta = alpha[0], beta[0]
            else:
                alpha, beta = self.per_element(alpha), self.per_element(beta)
            self.first_step_rounding = check_first_step(g, alpha, 1.0 - beta, self.frac_bits)
        return g

    def vjp(self, w, meta, t, u):
        """``(g, H_ww u, H_meta,w u)`` at ``(w, meta, t)``."""
        if self.hvp != "reverse":
            try:
                return self._vjp_forward(w, meta, t, u)
            except NotImplementedError:
                if self.hvp == "forward":
                    raise
                self.hvp = "reverse"    # an op without a forward-mode rule: fall back for good
        return self._vjp_reverse(w, meta, t, u)

    def _vjp_forward(self, w, meta, t, u):
        if meta is None:
            g, hw = make_jvp(lambda x: self._grad(x, None, t))(w)(u)
            return np.asarray(g), np.asarray(hw), None
        N = w.size

        def both(x):
            gw, gm = self._grad_both(x, meta, t)
            return anp.concatenate([gw, gm])

        out, jv = make_jvp(both)(w)(u)
        return np.asarray(out[:N]), np.asarray(jv[:N]), np.asarray(jv[N:])

    def _vjp_reverse(self, w, meta, t, u):
        if meta is None:
            back, g = make_vjp(lambda x: self._grad(x, None, t))(w)
            return np.asarray(g), np.asarray(back(u)), None
        back, g = make_vjp(lambda x, m: self._grad(x, m, t), argnum=(0, 1))(w, meta)
        hw, hm = back(u)
        return np.asarray(g), np.asarray(hw), np.asarray(hm)
