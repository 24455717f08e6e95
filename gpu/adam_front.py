"""``reversible.gpu.adam``: exact reversible Adam / AdamW on CuPy arrays.

The training semantics, checks and messages of :func:`reversible.adam`
(PyTorch's update with bias corrections, AdamW's decoupled decay, betas and
the decay factor applied as :func:`reversible.effective_beta`), on the GPU,
with explicit derivative callables as in :func:`reversible.gpu.sgd`:

* ``grad(w, meta, t) -> g``;
* ``vjp(w, meta, t, u) -> (g, H_ww u, H_meta,w u or None)`` for hypergradients,
  or ``grad_hvp(w, meta, t, vector) -> (g, H_ww u, H_meta,w u)`` with
  ``u = vector(g)`` (one taped pass: Adam's vector is built from the gradient).

The exact step is :class:`~reversible.gpu.adam_step.DeviceAdam`'s CUDA kernels
(bit for bit the NumPy specification); the adjoint is the CPU rule's own
:meth:`reversible.adam_rule.AdamRule.adjoint_step`, run on device arrays; the
loop is :mod:`reversible.gpu.loop`'s, shared with :func:`reversible.gpu.sgd`.
"""

import types

import numpy as np

from reversible import inputs, trajectory, validate
from reversible.adam_rule import AdamFormat, AdamRule, AdamSchedule

from ._cupy import require_cupy
from .adam_step import FORWARD, UNDO_MOMENTS, UNDO_POSITION, DeviceAdam
from .engine import host
from .loop import as_device, check_common, train

KINDS = ("w0", "alphas", "beta1s", "beta2s", "eps", "weight_decay", "meta")
_CHECKED = ("gradient", "Hessian-vector product", "mixed Hessian-vector product")


class DeviceSchedule:
    """An :class:`~reversible.adam_rule.AdamSchedule` whose per-element rows and group sums
    are device arrays, so that :class:`~reversible.adam_rule.AdamRule`'s adjoint runs on the
    device unchanged (on the emulation, NumPy: the host schedule's own functions)."""

    def __init__(self, schedule, xp, group_index):
        self.host, self.xp, self._gidx = schedule, xp, group_index

    def __getattr__(self, name):
        return getattr(self.host, name)

    def per_element(self, row):
        if self.xp is np:
            return self.host.per_element(row)
        return row[0] if row.shape[0] == 1 else self.xp.asarray(row)[self._gidx]

    def group_sum(self, x):
        if self.xp is np:
            return self.host.group_sum(x)
        if self.host.G == 1:
            return x.sum().reshape(1)
        return self.xp.bincount(self._gidx, weights=x, minlength=self.host.G)


class AdamDevice:
    """Adam / AdamW as a device rule of :mod:`reversible.gpu.loop`.

    The state is a :class:`~reversible.gpu.adam_step.DeviceAdam` whose kernel
    flags are read at each check; the number of NaN / Inf entries of every
    gradient and Hessian-vector product is noted on the device per step, so an
    error names its step in the CPU engine's words without waiting for the
    device at every step.
    """

    name = "adam"
    aux_names = ("m", "s")

    def __init__(self, state, stats):
        self.state, self.xp, self.stats = state, state.xp, stats
        self.N, self.T, self.schedule = state.N, state.T, state.schedule
        xp = self.xp
        self.adjoint = AdamRule(DeviceSchedule(self.schedule, xp, state.gidx))
        self.forward_bad = xp.zeros(self.T, dtype=np.int64)
        self.reverse_bad = xp.zeros((self.T, len(_CHECKED)), dtype=np.int64)
        self.meta_size = None
        self._checked = 0           # next forward step to check / reverse step + 1 to check
        self._direction = "forward"
        self.cot = None

    # ------------------------------------------------------------ values
    @property
    def w(self):
        return self.state.w()

    def _moment(self, X, bits):
        scale = self.adjoint.schedule.per_element(2.0 ** -bits.astype(np.float64))
        return X.astype(np.float64) * scale

    def aux(self, name):
        fmt = self.state.fmt
        return self._moment(self.state.M, fmt.m) if name == "m" else self._moment(self.state.S, fmt.s)

    def record(self, x, what, step):
        """Note how many entries of a checked vector are NaN or Inf (on the device)."""
        bad = self.xp.count_nonzero(~self.xp.isfinite(x))
        if self._direction == "forward":
            self.forward_bad[step] = bad
        else:
            if what == _CHECKED[2]:
                self.meta_size = x.size
            self.reverse_bad[step, _CHECKED.index(what)] = bad

    # ------------------------------------------------------------ forward
    def forward(self, g, t):
        self.state.forward(g, t)
        if t == 0:
            self.stats["adam_frac_bits"] = self.state.fmt.as_dict()
        return self.state.w()

    def check_forward(self, t):
        """Raise the first error of steps up to ``t``: a non-finite gradient, then the kernel's."""
        lo, self._checked = self._checked, t + 1
        if lo > t:
            return
        bad = host(self.forward_bad[lo:t + 1])
        flags = self.state.errors([(FORWARD, s) for s in range(lo, t + 1)])
        for s in range(lo, t + 1):
            if bad[s - lo]:
                raise trajectory.nonfinite_error("gradient", s, int(bad[s - lo]), self.N)
            if flags[s - lo] is not None:
                raise flags[s - lo]

    def forward_stats(self):
        out = self.state.buffer_stats()
        out.update(bits_per_element_step=out["buffer_bits"] / max(self.N * self.T, 1),
                   ideal_bits_per_element_step=self.schedule.ideal_bits_per_element_step())
        return out

    def copy(self):
        out = AdamDevice.__new__(AdamDevice)
        out.__dict__.update(self.__dict__)
        out.state = self.state.copy()
        out.reverse_bad = self.reverse_bad.copy()
        return out

    # ------------------------------------------------------------ reverse
    def reverse_begin(self, dw, dv):
        xp, N = self.xp, self.N
        if dv is None:
            daux = [xp.zeros(N), xp.zeros(N)]
        else:
            dm, ds = dv
            daux = [xp.zeros(N) if d is None else as_device(xp, d, f"cotangent of {name}_T", N).copy()
                    for d, name in ((dm, "m"), (ds, "s"))]
        hyper = {k: xp.zeros(shape) for k, shape in self.adjoint.hyper_shapes().items()}
        self.cot = types.SimpleNamespace(w=dw.copy(), aux=daux, hyper=hyper, meta=None)
        self._direction, self._checked = "reverse", self.T
        self.reverse_bad[...] = 0
        self.state.reset_reverse_flags()
        self.state.undo_position(self.T - 1)
        return self.state.w()

    def reverse_step(self, t, w, derivs):
        cot, xp = self.cot, self.xp
        aux_after = (self.aux("m"), self.aux("s"))

        def derivatives(u):
            g, hw, hm = derivs(u)
            if hm is not None and cot.meta is None:
                cot.meta = xp.zeros(hm.size)
            return g, hw, hm

        def aux_before(g):
            self.state.undo_moments(g, t)
            return self.aux("m"), self.aux("s")

        self.adjoint.adjoint_step(cot, t, w, aux_after, derivatives, aux_before)
        if t == 0:
            return None
        self.state.undo_position(t - 1)
        return self.state.w()

    def check_reverse(self, t):
        """Raise the first error of the reverse steps down to ``t``, in the CPU engine's order
        and words: undoing the position (the trajectory diverged), the gradient, the
        Hessian-vector products, undoing the moments (diverged)."""
        hi, self._checked = self._checked, t
        if t >= hi:
            return
        bad = host(self.reverse_bad[t:hi])
        launches = [(kernel, s) for s in range(hi - 1, t - 1, -1)
                    for kernel in (UNDO_POSITION, UNDO_MOMENTS)]
        errors = iter(self.state.errors(launches))
        for s in range(hi - 1, t - 1, -1):
            position, moments = next(errors), next(errors)
            if position is not None:
                raise trajectory.diverged_error(position, s) from position
            for k, what in enumerate(_CHECKED):
                if bad[s - t, k]:
                    size = self.meta_size if k == 2 else self.N
                    raise trajectory.nonfinite_error(what, s, int(bad[s - t, k]), size)
            if moments is not None:
                raise trajectory.diverged_error(moments, s) from moments

    def is_back(self):
        return self.state.is_back()

    def not_reversed_error(self):
        return trajectory.not_reversed_error(self.state.mismatch(), self.state.buffer_empty())

    def result(self):
        """The CPU rule's cotangents (bias corrections folded into the betas), by kind."""
        cot, xp = self.cot, self.xp
        on_host = types.SimpleNamespace(w=cot.w, aux=cot.aux, meta=cot.meta,
                                        hyper={k: host(v) for k, v in cot.hyper.items()})
        out = AdamRule(self.schedule).result(on_host)
        return {k: (out[k] if k in ("w0", "meta") else xp.asarray(out[k])) for k in KINDS}


def check_args(grad, w0, alphas, beta1s, beta2s, *, vjp=None, grad_hvp=None, eps=1e-8,
               weight_decay=0.0, frac_bits=None, group_index=None, check_every=256):
    """Validate the arguments of :func:`adam` without touching the GPU, with the checks and
    messages of :func:`reversible.adam`.  Returns ``(grad, vjp, N, AdamSchedule, AdamFormat)``."""
    grad, vjp, N, gi, G = check_common(grad, w0, vjp, group_index, check_every, grad_hvp)
    alphas2 = inputs.schedule(alphas, G, "alphas", 0.0, low_open=True, hint=inputs.ALPHA_HINT)
    b1 = inputs.momentum_schedule(beta1s, G, "beta1s")
    b2 = inputs.momentum_schedule(beta2s, G, "beta2s")
    T = inputs.same_steps(alphas=alphas2, beta1s=b1, beta2s=b2)
    eps_g = np.broadcast_to(inputs.per_group_values(eps, G, "eps"), (G,))
    wd = inputs.decay_values(weight_decay, G, T)
    fmt = AdamFormat.parse(frac_bits, G)
    schedule = AdamSchedule.build(alphas2, b1, b2, np.zeros(N, np.int64) if gi is None else gi, G,
                                  eps_g, wd)
    return grad, vjp, N, schedule, fmt


def adam(grad, w0, alphas, beta1s, beta2s, meta=None, *, vjp=None, grad_hvp=None, eps=1e-8,
         weight_decay=0.0, frac_bits=None, group_index=None, stats=None, check_every=256,
         progress=False, backend=None):
    """Train ``w0`` exactly on the GPU for ``T = len(alphas)`` steps of Adam (AdamW with
    ``weight_decay``); returns a :class:`~reversible.gpu.loop.Trained`.

    The update, the hyperparameters' shapes and checks are those of
    :func:`reversible.adam`: ``alphas``, ``beta1s``, ``beta2s`` of shape
    ``(T,)`` or ``(T, G)`` (``group_index`` gives each element's group),
    ``eps`` a positive scalar or one per group, ``weight_decay`` a scalar, one
    per group or ``(T, G)``, ``frac_bits`` the weights' (int) or a dict
    ``{"w", "m", "s"}``.  ``grad`` and ``vjp`` / ``grad_hvp`` as in the module
    docstring (or a model with ``.grad`` / ``.vjp``); ``w0`` a flat vector
    (CuPy, NumPy or DLPack).  ``run.hypergradient(dw_T)`` returns the CPU
    engine's cotangents of ``w0``, ``alphas``, ``beta1s``, ``beta2s``, ``eps``,
    ``weight_decay`` and ``meta``.  Failures are detected on the device and
    raised within ``check_every`` steps, naming the step, in the CPU engine's
    words.  ``backend`` is for testing (:func:`reversible.gpu.emulate.backend`).
    """
    grad, vjp, N, schedule, fmt = check_args(
        grad, w0, alphas, beta1s, beta2s, vjp=vjp, grad_hvp=grad_hvp, eps=eps,
        weight_decay=weight_decay, frac_bits=frac_bits, group_index=group_index,
        check_every=check_every)
    stats = validate.stats_dict(stats)
    progress = validate.flag(progress, "progress")
    xp = require_cupy() if backend is None else backend.xp
    state = DeviceAdam(schedule, as_device(xp, w0, "w0", N), fmt, backend=backend, deferred=True)
    stats.update(method="exact", rule="adam", device="cuda", T=schedule.T, N=N, groups=schedule.G,
                 frac_bits=fmt.w, tail_capacity_words=state.cap)
    return train(AdamDevice(state, stats), grad, meta, stats, vjp=vjp, grad_hvp=grad_hvp,
                 check_every=check_every, progress=progress)
