"""``reversible.gpu.sgd``: exact reversible SGD with momentum on CuPy arrays.

Same training semantics as :func:`reversible.sgd` (``v <- beta v - (1 - beta) g``,
``w <- w + alpha v``, betas applied as ``round(beta * 2**32) / 2**32``), on the
GPU, with explicit derivative callables instead of autograd:

* ``grad(w, meta, t) -> g``;
* ``vjp(w, meta, t, u) -> (g, H_ww u, H_meta,w u or None)`` for hypergradients.

``w`` is handed to them as a flat CuPy float64 vector; they may return CuPy
arrays or any DLPack array (PyTorch, JAX), which is taken without a copy.
A model object with ``grad`` and ``vjp`` methods (such as
:class:`reversible.gpu.MLP`) may be passed in place of ``grad``.
Argument checking happens before CuPy is imported.  The loop is
:mod:`reversible.gpu.loop`'s, shared with :func:`reversible.gpu.adam`; this module
holds SGD's arguments and its device rule.
"""

import numpy as np

from reversible import inputs, validate
from reversible.buffer import BETA_ONE, quantize_beta
from reversible.errors import (BufferUnderflowError, FixedPointOverflowError, NonFiniteError,
                               ReversibilityError)
from reversible.fixedpoint import DEFAULT_FRAC_BITS, check_frac_bits

from ._cupy import require_cupy
from .loop import as_device, check_common, flat_size, train


def check_args(grad, w0, alphas, betas, *, vjp=None, v0=None, frac_bits=None, group_index=None,
               check_every=256):
    """Validate the arguments of :func:`sgd` without touching the GPU.

    The schedules, ``frac_bits`` and single values go through the same checks
    (and messages) as :func:`reversible.sgd`'s (:mod:`reversible.inputs`,
    :mod:`reversible.validate`).  Returns ``(grad, vjp, N, alphas (T, G),
    n (T, G), group_index or None, frac_bits)``.
    """
    grad, vjp, N, gi, G = check_common(grad, w0, vjp, group_index, check_every)
    if v0 is not None and flat_size(v0, "v0") != N:
        raise ValueError(f"v0 has {flat_size(v0, 'v0')} elements but w0 has {N}")
    alphas2 = np.ascontiguousarray(inputs.schedule(alphas, G, "alphas", 0.0, low_open=True,
                                                   hint=inputs.ALPHA_HINT), dtype=np.float64)
    betas2 = inputs.momentum_schedule(betas, G)
    inputs.same_steps(alphas=alphas2, betas=betas2)
    n = quantize_beta(betas2)
    frac_bits = check_frac_bits(DEFAULT_FRAC_BITS if frac_bits is None else frac_bits)
    return grad, vjp, N, alphas2, n, gi, frac_bits


NOT_DETERMINISTIC = ("The gradient must be a deterministic function of (w, meta, t): draw "
                     "minibatches from the step index t, and avoid non-deterministic reductions "
                     "(atomics) in the gradient")


def not_reversed_message(eng):
    """The error of a GPU reverse pass that did not land on its starting point (as on the CPU)."""
    cp = eng.cp
    dw_bits = int(cp.count_nonzero(eng.W != eng.W0))
    dv_bits = int(cp.count_nonzero(eng.V != eng.V0))
    return (f"the reverse pass did not return to the starting point bit for bit on the GPU: "
            f"{dw_bits} weights and {dv_bits} velocities differ. " + NOT_DETERMINISTIC)


class MomentumDevice:
    """SGD with momentum as a device rule of :mod:`reversible.gpu.loop` (one fused kernel per
    step and direction, :class:`~reversible.gpu.engine.Engine`; the kernels check the gradient
    and Hessian-vector products for NaN / Inf themselves)."""

    name = "sgd"
    aux_names = ("v",)
    record = None

    def __init__(self, engine, ungrouped):
        self.state, self.xp = engine, engine.cp
        self.N, self.T = engine.N, engine.T
        self._ungrouped = ungrouped
        self._u = self._d_meta = None

    @property
    def w(self):
        return self.state.w

    def aux(self, name):
        return self.state.v

    def forward(self, g, t):
        w = self.xp.empty(self.N, dtype=self.xp.float64)
        self.state.forward_step(g, t, w)
        return w

    def check_forward(self, t):
        self.state.check()

    def forward_stats(self):
        eng = self.state
        bits = eng.buffer_bits()
        return dict(buffer_bits=bits, buffer_words=eng.buffer_words(), buffer_bytes=eng.nbytes(),
                    bits_per_element_step=bits / max(self.N * self.T, 1),
                    ideal_bits_per_element_step=float(np.mean(np.log2(
                        BETA_ONE / eng.n_host.astype(float)))) if self._ungrouped else None)

    def copy(self):
        return MomentumDevice(self.state.copy(), self._ungrouped)

    def reverse_begin(self, dw, dv):
        xp = self.xp
        dv = xp.zeros(self.N) if dv is None else as_device(xp, dv, "cotangent of v_T", self.N)
        self._d_meta = None
        self._u, w = self.state.reverse_begin(dw, dv)
        return w

    def reverse_step(self, t, w, derivs):
        g, hw, hm = derivs(self._u)
        if hm is not None:
            self._d_meta = -hm if self._d_meta is None else self._d_meta - hm
        self._u, w = self.state.reverse_step(t, g, hw)
        return w

    def check_reverse(self, t):
        """Device errors of a reverse pass: an empty buffer or an overflow mean it diverged."""
        try:
            self.state.check()
        except BufferUnderflowError as err:
            raise BufferUnderflowError(f"reverse pass diverged from the forward trajectory: {err}. "
                                       + NOT_DETERMINISTIC) from err
        except FixedPointOverflowError as err:
            raise ReversibilityError(f"reverse pass diverged from the forward trajectory (a value "
                                     f"left the fixed-point range it stayed in going forward: "
                                     f"{err}). " + NOT_DETERMINISTIC) from err

    def is_back(self):
        return self.state.is_back()

    def not_reversed_error(self):
        return ReversibilityError(not_reversed_message(self.state))

    def result(self):
        d_meta, eng = self._d_meta, self.state
        if d_meta is not None and not bool(self.xp.isfinite(d_meta).all()):
            raise NonFiniteError("the meta hypergradient contains NaN or Inf: a mixed Hessian-vector "
                                 "product overflowed; lower the learning rate or check the loss")
        return {"w0": eng.dw, "v0": eng.dv, "alphas": eng.d_alpha, "betas": eng.d_beta,
                "meta": d_meta}


def sgd(grad, w0, alphas, betas, meta=None, *, vjp=None, v0=None, frac_bits=None,
        group_index=None, stats=None, check_every=256, progress=False, backend=None):
    """Train ``w0`` exactly on the GPU for ``T = len(alphas)`` steps; returns a :class:`Trained`.

    ``grad(w, meta, t)`` (or a model with ``.grad``/``.vjp``) must be a pure
    function of its arguments.  ``w0``, ``v0`` are flat vectors (CuPy, NumPy
    or DLPack); ``alphas``, ``betas`` have shape ``(T,)`` or ``(T, G)`` with
    ``group_index`` giving each element's group.  Failures (overflow, NaN,
    corrupt buffer) are detected on the device and raised within
    ``check_every`` steps with the step at which they happened; the state is
    then unusable.  ``stats``, if a dict, receives timings and buffer figures.
    ``backend`` is for testing (:func:`reversible.gpu.emulate.backend` runs the
    CUDA source on the CPU with NumPy arrays).

    The arguments, their checks and messages, and the hypergradient's keys are
    those of the CPU API (:func:`reversible.sgd`,
    :func:`reversible.checkpoint.hypergradient`); the GPU keeps the trained
    run in the returned object instead of a checkpoint file.
    """
    grad, vjp, N, alphas2, n, gi, frac_bits = check_args(
        grad, w0, alphas, betas, vjp=vjp, v0=v0, frac_bits=frac_bits, group_index=group_index,
        check_every=check_every)
    stats = validate.stats_dict(stats)
    progress = validate.flag(progress, "progress")
    cp = require_cupy() if backend is None else backend.xp
    from .engine import Engine
    w0d = as_device(cp, w0, "w0", N)
    v0d = cp.zeros(N) if v0 is None else as_device(cp, v0, "v0", N)
    eng = Engine(w0d, v0d, alphas2, n, gi, frac_bits, backend=backend)
    stats.update(method="exact", device="cuda", T=eng.T, N=N, groups=eng.G, frac_bits=frac_bits,
                 tail_capacity_words=eng.capacity)
    return train(MomentumDevice(eng, gi is None), grad, meta, stats, vjp=vjp,
                 check_every=check_every, progress=progress)


def train_plain(grad, w0, alphas, betas, meta=None, *, v0=None, group_index=None, backend=None):
    """Plain float64 SGD with momentum on the GPU (same betas as :func:`sgd`); returns ``(w_T, v_T)``.

    Not reversible: the baseline that exact training is timed against.
    """
    grad, _, N, alphas2, n, gi, _ = check_args(grad, w0, alphas, betas, v0=v0, group_index=group_index)
    from .engine import BLOCK, _kernels
    cp = require_cupy() if backend is None else backend.xp
    k = (_kernels(cp) if backend is None else backend.kernels)["plain_step"]
    w = as_device(cp, w0, "w0", N).copy()
    v = cp.zeros(N) if v0 is None else as_device(cp, v0, "v0", N).copy()
    a_d, b_d = cp.asarray(alphas2), cp.asarray(n / float(BETA_ONE))
    gid = cp.zeros(1, dtype=cp.int32) if gi is None else cp.asarray(gi, dtype=cp.int32)
    G = alphas2.shape[1]
    for t in range(alphas2.shape[0]):
        g = as_device(cp, grad(w, meta, t), "gradient", N)
        k(((N + BLOCK - 1) // BLOCK,), (BLOCK,), (w, v, g, a_d, b_d, gid, np.int64(N), np.int32(G),
                                              np.int32(gi is not None), np.int32(t)))
    return w, v
