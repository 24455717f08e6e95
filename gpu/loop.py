"""One device training loop for every update rule: the GPU twin of :mod:`reversible.trajectory`.

:func:`train` runs the exact forward pass and returns a :class:`Trained`,
whose :meth:`Trained.hypergradient` runs it backwards; both drive a *device
rule*, which owns the device state and its kernels:

* SGD with momentum: :class:`reversible.gpu.front.MomentumDevice` (:mod:`reversible.gpu.engine`);
* Adam / AdamW: :class:`reversible.gpu.adam_front.AdamDevice` (:mod:`reversible.gpu.adam_step`).

A device rule has ``N``, ``T``, ``xp`` (CuPy, or NumPy on the emulation),
``name`` (its front end's), ``aux_names`` and:

* ``w`` (the float64 weights) and ``aux(name)``;
* ``record``: None when its kernels check the gradient and Hessian-vector
  products for NaN / Inf themselves, else ``record(x, what, step)``, which
  notes on the device how many entries of a checked vector are not finite;
* ``forward(g, t)`` -> the weights after step ``t``; ``check_forward(t)``
  raises the first error recorded up to step ``t``; ``forward_stats()``;
* ``copy()``; ``reverse_begin(dw, dv)`` -> ``w_{T-1}``;
  ``reverse_step(t, w_t, derivs)`` -> ``w_{t-1}`` (None after step 0), where
  ``derivs(u)`` gives ``(g, H_ww u, H_meta,w u)`` at ``w_t`` as in
  :class:`reversible.trajectory.Derivatives`; ``check_reverse(t)`` raises the
  first error recorded down to step ``t``; ``is_back()``,
  ``not_reversed_error()`` and ``result()`` (the cotangent dict).

Nothing here waits for the device between checks: errors are read every
``check_every`` steps and at the end of each pass.
"""

import time

import numpy as np

from reversible import trajectory, validate


def as_device(xp, x, name, size=None, step=None):
    """A flat float64 device array from CuPy, NumPy or any DLPack array (PyTorch, JAX), without a
    copy where possible; a wrong size raises the CPU engine's error."""
    if isinstance(x, xp.ndarray):
        out = x
    elif hasattr(x, "__dlpack__") and not isinstance(x, np.ndarray):
        out = xp.from_dlpack(x)
    else:
        out = xp.asarray(x)
    out = out.astype(xp.float64, copy=False).ravel()
    if size is not None and out.size != size:
        raise trajectory.size_error(name, step, out.size, size)
    return out


def checked_vector(xp, x, size, what, step, record):
    """:func:`as_device`, then ``record`` (a device rule's finiteness log, or None)."""
    x = as_device(xp, x, what, size, step)
    if record is not None:
        record(x, what, step)
    return x


def finite_vector(xp, x, size, what):
    """A cotangent given by the user: device float64 of ``size`` entries, all finite (checked
    now, as :func:`reversible.trajectory.check_vector` does on the CPU)."""
    x = as_device(xp, x, what, size)
    bad = int(xp.count_nonzero(~xp.isfinite(x)))
    if bad:
        raise trajectory.nonfinite_error(what, None, bad, size)
    return x


class DeviceDerivatives(trajectory.Derivatives):
    """The derivatives of one reverse step, as on the CPU, checked on the device: sizes at
    once, finiteness through the rule's ``record`` (read at the next check)."""

    def __init__(self, grad, vjp, w, meta, t, grad_hvp, xp, record):
        super().__init__(grad, vjp, w, meta, t, 0, grad_hvp)
        self.xp, self.record = xp, record

    def check(self, x, size, what, step):
        return checked_vector(self.xp, x, size, what, step, self.record)

    def __call__(self, u):
        g, hw, hm = super().__call__(u)
        if hm is not None:
            hm = self.check(hm, None, "mixed Hessian-vector product", self.t)
        return g, hw, hm


def steps(iterable, total, enabled, desc):
    """``iterable`` with a tqdm bar when ``enabled``."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, total=total, desc=desc, leave=False)


def check_common(grad, w0, vjp, group_index, check_every, grad_hvp=None):
    """The arguments every GPU front end shares, checked before CuPy is imported.

    ``grad`` may be a model with ``.grad`` (and ``.vjp``).  Returns
    ``(grad, vjp, N, group_index or None, G)``.
    """
    if hasattr(grad, "grad") and callable(grad.grad):
        model = grad
        grad = model.grad
        vjp = getattr(model, "vjp", None) if vjp is None else vjp
    validate.function(grad, "grad", " grad(w, meta, t) -> g (or a model with callable .grad / .vjp)")
    if vjp is not None:
        validate.function(vjp, "vjp", " vjp(w, meta, t, u) -> (g, H_ww u, H_meta,w u)")
    if grad_hvp is not None:
        validate.function(grad_hvp, "grad_hvp", " grad_hvp(w, meta, t, vector) -> "
                                                "(g, H_ww u, H_meta,w u) with u = vector(g)")
    N = flat_size(w0, "w0")
    if group_index is not None:
        gi = np.asarray(group_index)
        if gi.shape != (N,) or not np.issubdtype(gi.dtype, np.integer):
            raise ValueError(f"group_index must be an integer vector of length {N}")
        if N and (gi.min() < 0):
            raise ValueError("group_index must be non-negative")
        G = int(gi.max()) + 1 if N else 1
    else:
        gi, G = None, 1
    validate.scalar(check_every, "check_every", 1, integer=True,
                    hint="check_every must be a positive number of steps")
    return grad, vjp, N, (gi if G > 1 else None), G


def flat_size(x, name):
    """The length of a flat vector (any array type); a clear error for other shapes."""
    shape = getattr(x, "shape", None)
    if shape is None:
        shape = np.shape(x)
    if len(shape) != 1:
        raise ValueError(f"{name} must be a flat (1-D) vector; got shape {tuple(shape)} "
                         "(flatten your parameters; per-array groups go in group_index)")
    return int(shape[0])


def train(rule, grad, meta, stats, *, vjp=None, grad_hvp=None, check_every=256, progress=False):
    """The exact forward pass of ``rule`` with ``grad(w, meta, t)``; returns a :class:`Trained`."""
    xp, N, T = rule.xp, rule.N, rule.T
    t0 = time.perf_counter()
    w = rule.w
    for t in steps(range(T), T, progress, f"exact forward ({rule.name}, GPU)"):
        g = checked_vector(xp, grad(w, meta, t), N, "gradient", t, rule.record)
        w = rule.forward(g, t)
        if (t + 1) % check_every == 0:
            rule.check_forward(t)
    rule.check_forward(T - 1)
    synchronize(xp)
    stats["forward_seconds"] = time.perf_counter() - t0
    stats.update(rule.forward_stats())
    return Trained(rule, grad, vjp, grad_hvp, meta, stats, int(check_every), progress)


def synchronize(xp):
    """Wait for the device (so timings measure the work); nothing on the emulation."""
    cuda = getattr(xp, "cuda", None)
    if cuda is not None:
        cuda.get_current_stream().synchronize()


class Trained:
    """A trained run on the device: ``w`` (= ``w_T``), the optimiser state (``v`` for SGD with
    momentum, ``m`` and ``s`` for Adam), ``stats``, and :meth:`hypergradient`."""

    def __init__(self, rule, grad, vjp, grad_hvp, meta, stats, check_every, progress):
        self._rule, self._grad, self._vjp, self._grad_hvp = rule, grad, vjp, grad_hvp
        self._meta, self.stats = meta, stats
        self._check_every, self._progress = check_every, progress

    @property
    def engine(self):
        """The device state holding the trained run (kernels, buffers, schedules)."""
        return self._rule.state

    @property
    def _engine(self):
        return self._rule.state

    @property
    def w(self):
        return self._rule.w

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._rule.aux_names:
            return self._rule.aux(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def hypergradient(self, dw_T, dv_T=None, *, keep=True, check=True):
        """Run training backwards exactly, back-propagating ``dw_T`` (and ``dv_T``, the cotangent
        of the optimiser state: ``v_T`` for SGD with momentum, ``(m_T, s_T)`` for Adam).

        Returns the CPU engine's cotangent dict (:func:`reversible.trajectory.reverse`)
        with device arrays: for SGD ``w0``, ``v0``, ``alphas``, ``betas``; for Adam
        ``w0``, ``alphas``, ``beta1s``, ``beta2s``, ``eps``, ``weight_decay``;
        schedules ``(T, G)``, betas with respect to the applied (quantised) value,
        and ``meta`` (None when ``vjp`` returns no mixed term).  With
        ``keep=True`` the forward state is kept so this can be called again.
        With ``check=True`` a reversal that does not land bit for bit on the
        initial state and empty buffers raises :class:`ReversibilityError`.
        """
        if self._vjp is None and self._grad_hvp is None:
            raise ValueError("hypergradients need a joint VJP: pass vjp=(w, meta, t, u) -> "
                             f"(g, H_ww u, H_meta,w u) to reversible.gpu.{self._rule.name}")
        validate.flag(keep, "keep")
        validate.flag(check, "check")
        rule = self._rule.copy() if keep else self._rule
        xp, N, T = rule.xp, rule.N, rule.T
        dw = finite_vector(xp, dw_T, N, "cotangent of w_T")
        t0 = time.perf_counter()
        w = rule.reverse_begin(dw, dv_T)
        for t in steps(range(T - 1, -1, -1), T, self._progress, f"exact reverse ({rule.name}, GPU)"):
            derivs = DeviceDerivatives(self._grad, self._vjp, w, self._meta, t, self._grad_hvp, xp,
                                       rule.record)
            w = rule.reverse_step(t, w, derivs)
            if t % self._check_every == 0:
                rule.check_reverse(t)
        rule.check_reverse(0)
        exact = rule.is_back()
        self.stats.update(reverse_seconds=time.perf_counter() - t0, reversed_exactly=exact)
        if check and not exact:
            raise rule.not_reversed_error()
        return rule.result()

    def hypergrad(self, dw, dv=None, **kw):
        """The 0.1 name of :meth:`hypergradient`."""
        return self.hypergradient(dw, dv, **kw)

