"""The derivatives the engine needs, from a PyTorch training loss, by ``torch.func``.

:class:`LossDerivatives` turns ``train_loss(params, meta, t)`` into functions
of flat float64 tensors (one contiguous vector of all parameters, cut into
per-leaf views):

* ``grad(w, meta, t) -> g`` (``torch.func.grad``);
* ``vjp(w, meta, t, u) -> (g, H_ww u, H_meta,w u)``: one Hessian-vector
  product, forward-over-reverse (``torch.func.jvp`` of the gradient) by
  default, reverse-over-reverse (``torch.func.vjp`` of the gradient) for
  losses with an operation that has no forward-mode rule.

Leaves keep their dtype: a float32 model gets its weights rounded to float32
(the engine's state stays fixed point), computes its gradient and products in
float32, and they are widened to float64.  That is a deterministic function of
the weights, so exact reversal still holds bit for bit.
"""

import torch

from . import determinism


class LossDerivatives:
    """``grad`` and ``vjp`` of ``train_loss`` on flat float64 tensors.

    ``hvp`` is ``"auto"`` (forward-over-reverse, falling back to
    reverse-over-reverse for good the first time forward mode fails),
    ``"forward"`` or ``"reverse"``.  ``stats`` (a dict) records the mode used.
    """

    def __init__(self, train_loss, tree, meta_tree, hvp="auto", stats=None):
        if hvp not in ("auto", "forward", "reverse"):
            raise ValueError(f"hvp must be 'auto', 'forward' or 'reverse'; got {hvp!r}")
        self.train_loss, self.tree, self.meta_tree = train_loss, tree, meta_tree
        self.hvp = hvp
        self.stats = {} if stats is None else stats
        self.separate_gradient = False     # set when the HVP's primal differs from grad()
        self._checked_primal = False

    # ------------------------------------------------------------ helpers
    def _meta_leaves(self, meta):
        return None if self.meta_tree is None else self.meta_tree.views(meta)

    def _loss_of(self, t, meta_leaves):
        def loss(leaves, mleaves=meta_leaves):
            params = self.tree.build(leaves)
            m = None if self.meta_tree is None else self.meta_tree.build(mleaves)
            return self.train_loss(params, m, t)
        return loss

    def _flat(self, leaves, like, tree):
        out = torch.empty(tree.size, dtype=torch.float64, device=like.device)
        return tree.concat_into(leaves, out)

    # ------------------------------------------------------------ public
    def loss_value(self, w, meta, t):
        """The training loss at ``(w, meta, t)``, checked to be a real scalar tensor."""
        value = self._loss_of(t, self._meta_leaves(meta))(self.tree.views(w))
        return determinism.check_loss_value(value, t)

    def grad(self, w, meta, t):
        loss = self._loss_of(t, self._meta_leaves(meta))
        return self._flat(torch.func.grad(loss)(self.tree.views(w)), w, self.tree)

    def vjp(self, w, meta, t, u):
        """``(g, H_ww u, H_meta,w u or None)`` at ``(w, meta, t)``."""
        if self.hvp != "reverse":
            try:
                out = self._vjp_forward(w, meta, t, u)
            except (NotImplementedError, RuntimeError) as err:
                if self.hvp == "forward" or not determinism.is_missing_forward_rule(err):
                    raise
                self.hvp = "reverse"
                self.stats["hvp"] = f"reverse (forward mode failed: {str(err).splitlines()[0]})"
                out = self._vjp_reverse(w, meta, t, u)
        else:
            out = self._vjp_reverse(w, meta, t, u)
        g, hw, hm = out
        if not self._checked_primal:
            # the reverse pass undoes each step with this g: it must equal grad() bit for bit
            self._checked_primal = True
            if not torch.equal(g, self.grad(w, meta, t)):
                self.separate_gradient = True
                self.stats["hvp_gradient"] = "separate (the HVP's primal gradient differs in its last bits)"
        if self.separate_gradient:
            g = self.grad(w, meta, t)
        return g, hw, hm

    def _vjp_forward(self, w, meta, t, u):
        leaves, tangents = self.tree.views(w), self.tree.views(u)
        mleaves = self._meta_leaves(meta)
        loss = self._loss_of(t, mleaves)
        if mleaves is None:
            g, hw = torch.func.jvp(torch.func.grad(loss), (leaves,), (tangents,))
            return self._flat(g, w, self.tree), self._flat(hw, w, self.tree), None

        def both(ls):
            return torch.func.grad(lambda a, b: loss(a, b), argnums=(0, 1))(ls, mleaves)

        (g, gm), (hw, hm) = torch.func.jvp(both, (leaves,), (tangents,))
        return (self._flat(g, w, self.tree), self._flat(hw, w, self.tree),
                self._flat(hm, w, self.meta_tree))

    def _vjp_reverse(self, w, meta, t, u):
        leaves, tangents = self.tree.views(w), self.tree.views(u)
        mleaves = self._meta_leaves(meta)
        loss = self._loss_of(t, mleaves)
        if mleaves is None:
            g, back = torch.func.vjp(torch.func.grad(loss), leaves)
            (hw,) = back(tangents)
            return self._flat(g, w, self.tree), self._flat(hw, w, self.tree), None
        g, back = torch.func.vjp(lambda ls, ms: torch.func.grad(lambda a: loss(a, ms))(ls),
                                 leaves, mleaves)
        hw, hm = back(tangents)
        return (self._flat(g, w, self.tree), self._flat(hw, w, self.tree),
                self._flat(hm, w, self.meta_tree))
