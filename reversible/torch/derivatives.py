"""The derivatives the engine needs, from a PyTorch training loss, by ``torch.func``.

:class:`LossDerivatives` turns ``train_loss(params, meta, t)`` into functions
of flat float64 tensors (one contiguous vector of all parameters, cut into
per-leaf views):

* ``grad(w, meta, t) -> g``: ``torch.autograd.grad`` on per-leaf views (the
  same kernels, and bits, as ``torch.func.grad``, with less overhead per call);
* ``vjp(w, meta, t, u) -> (g, H_ww u, H_meta,w u)``: one Hessian-vector
  product, by one of three modes: ``"forward"`` (forward-over-reverse,
  ``torch.func.jvp`` of ``torch.func.grad``), ``"reverse"``
  (reverse-over-reverse, ``torch.func.vjp`` of ``torch.func.grad``) or
  ``"double"`` (``torch.autograd.grad`` twice, ``create_graph=True``).
  ``"auto"`` uses each mode in turn for the first reverse steps (two calls
  each), then keeps the fastest (forward mode is usually cheapest for large
  models on a GPU; the per-call overhead of ``torch.func`` favours
  ``"double"`` for small CPU models); a mode that fails (an op without a
  forward-mode rule) is skipped.  The choice is remembered for later runs
  with the same loss function (a meta-optimisation loop).  The modes agree to rounding, so ``"auto"``
  hypergradients may differ in their last bits from run to run: name a mode
  for bitwise-reproducible ones.

Leaves keep their dtype: a float32 model gets its weights rounded to float32
(the engine's state stays fixed point), computes its gradient and products in
float32, and they are widened to float64.  That is a deterministic function of
the weights, so exact reversal still holds bit for bit.
"""

import time
import weakref

import torch

from ..errors import ReversibilityError
from . import determinism


# the HVP mode "auto" chose for a loss function, reused by later runs with the same loss
_CHOSEN = weakref.WeakKeyDictionary()


class LossDerivatives:
    """``grad`` and ``vjp`` of ``train_loss`` on flat float64 tensors.

    ``hvp`` is ``"auto"``, ``"forward"``, ``"reverse"`` or ``"double"``;
    ``stats`` (a dict) records the mode used and, for ``"auto"``, each mode's time.
    """

    MODES = ("forward", "reverse", "double")
    TRIALS = 2          # calls of each mode timed under "auto" before the fastest is kept

    def __init__(self, train_loss, tree, meta_tree, hvp="auto", stats=None):
        if hvp not in ("auto",) + self.MODES:
            raise ValueError(f"hvp must be 'auto', 'forward', 'reverse' or 'double'; got {hvp!r}")
        self.train_loss, self.tree, self.meta_tree = train_loss, tree, meta_tree
        self.hvp = hvp
        self.stats = {} if stats is None else stats
        self._checked_primal, self._separate = set(), set()   # modes whose own gradient differs
        self._timings, self._failed = {}, {}
        if hvp == "auto" and _remembered(train_loss) is not None:
            self.hvp = _remembered(train_loss)
            self.stats["hvp"] = self.hvp

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
        with torch.no_grad():
            value = self._loss_of(t, self._meta_leaves(meta))(self.tree.views(w))
        return determinism.check_loss_value(value, t)

    def grad(self, w, meta, t):
        leaves = [x.detach().requires_grad_() for x in self.tree.views(w)]
        with torch.enable_grad():
            loss = self._loss_of(t, self._meta_leaves(meta))(leaves)
            grads = torch.autograd.grad(loss, leaves, allow_unused=True, materialize_grads=True)
        return self._flat(grads, w, self.tree)

    def vjp(self, w, meta, t, u):
        """``(g, H_ww u, H_meta,w u or None)`` at ``(w, meta, t)``."""
        mode = self._next_trial() if self.hvp == "auto" else self.hvp
        start = time.perf_counter()
        try:
            g, hw, hm = getattr(self, "_vjp_" + mode)(w, meta, t, u)
        except (NotImplementedError, RuntimeError) as err:
            if self.hvp != "auto" or not determinism.is_missing_forward_rule(err):
                raise
            self._failed[mode] = str(err).splitlines()[0]
            self.stats["hvp_failed_modes"] = dict(self._failed)
            if len(self._failed) == len(self.MODES):
                raise RuntimeError("no Hessian-vector product mode works for this loss: "
                                   f"{self._failed}") from err
            return self.vjp(w, meta, t, u)
        if self.hvp == "auto":
            _synchronize(w)
            self._timings.setdefault(mode, []).append(time.perf_counter() - start)
        if mode not in self._checked_primal:
            # the reverse pass undoes each step with this g: it must equal grad() bit for bit
            self._checked_primal.add(mode)
            if not torch.equal(g, self.grad(w, meta, t)):
                self._separate.add(mode)
                self.stats["hvp_gradient"] = ("separate (the HVP's own gradient differs in its "
                                              f"last bits from the forward pass's in mode {mode!r})")
        if mode in self._separate:
            g = self.grad(w, meta, t)
        return g, hw, hm

    def grad_then_hvp(self, w, meta, t, vector):
        """``(g, H_ww u, H_meta,w u or None)`` with ``u = vector(g)``: one taped gradient and one
        backward pass through it (the vector of Adam's adjoint is built from ``g``)."""
        def check_primal(g_flat):
            if "grad_then_hvp" not in self._checked_primal:
                self._checked_primal.add("grad_then_hvp")
                if not torch.equal(g_flat, self.grad(w, meta, t)):
                    raise ReversibilityError(
                        "the gradient taped for the Hessian-vector product differs in its last "
                        f"bits from the plain gradient at step {t}; exact reversal needs them "
                        "equal. " + determinism.settings_advice(w.device))
            return vector(g_flat)

        return self._double_backward(w, meta, t, check_primal)

    def _next_trial(self):
        """Under ``"auto"``: the next mode to try (round robin, twice each), then the fastest."""
        working = [m for m in self.MODES if m not in self._failed]
        pending = [m for m in working if len(self._timings.get(m, ())) < self.TRIALS]
        if pending:
            return min(pending, key=lambda m: len(self._timings.get(m, ())))
        best = min(working, key=lambda m: min(self._timings[m]))
        self.hvp = best
        try:
            _CHOSEN[self.train_loss] = best
        except TypeError:             # not weak-referenceable: choose again next time
            pass
        self.stats.update(hvp=best, hvp_seconds_by_mode={m: min(self._timings[m]) for m in working})
        return best

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

    def _vjp_double(self, w, meta, t, u):
        return self._double_backward(w, meta, t, lambda g_flat: u)

    def _double_backward(self, w, meta, t, vector):
        """A taped gradient, then one backward pass through it along ``vector(g)``."""
        leaves = [x.detach().requires_grad_() for x in self.tree.views(w)]
        mleaves = self._meta_leaves(meta)
        if mleaves is not None:
            mleaves = [x.detach().requires_grad_() for x in mleaves]
        inputs = leaves + (mleaves or [])
        with torch.enable_grad():
            loss = self._loss_of(t, mleaves)(leaves)
            g = torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True,
                                    materialize_grads=True)
            g_flat = self._flat([x.detach() for x in g], w, self.tree)
            h = torch.autograd.grad(g, inputs, self.tree.views(vector(g_flat)), allow_unused=True,
                                    materialize_grads=True)
        n = len(leaves)
        hm = None if mleaves is None else self._flat(h[n:], w, self.meta_tree)
        return g_flat, self._flat(h[:n], w, self.tree), hm


def _remembered(train_loss):
    try:
        return _CHOSEN.get(train_loss)
    except TypeError:
        return None


def _synchronize(x):
    """Wait for the device of ``x`` (so a timing measures the work, not its launch)."""
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
