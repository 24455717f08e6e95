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
Argument checking happens before CuPy is imported.
"""

import time

import numpy as np

from reversible import inputs, validate
from reversible.buffer import BETA_ONE, quantize_beta
from reversible.errors import (BufferUnderflowError, FixedPointOverflowError, NonFiniteError,
                               ReversibilityError)
from reversible.fixedpoint import DEFAULT_FRAC_BITS, check_frac_bits

from ._cupy import require_cupy


def _size_of(x, name):
    shape = getattr(x, "shape", None)
    if shape is None:
        shape = np.shape(x)
    if len(shape) != 1:
        raise ValueError(f"{name} must be a flat (1-D) vector; got shape {tuple(shape)} "
                         "(flatten your parameters; per-array groups go in group_index)")
    return int(shape[0])


def check_args(grad, w0, alphas, betas, *, vjp=None, v0=None, frac_bits=None, group_index=None,
               check_every=256):
    """Validate the arguments of :func:`sgd` without touching the GPU.

    The schedules, ``frac_bits`` and single values go through the same checks
    (and messages) as :func:`reversible.sgd`'s (:mod:`reversible.inputs`,
    :mod:`reversible.validate`).  Returns ``(grad, vjp, N, alphas (T, G),
    n (T, G), group_index or None, frac_bits)``.
    """
    if hasattr(grad, "grad") and callable(grad.grad):
        model = grad
        grad = model.grad
        vjp = getattr(model, "vjp", None) if vjp is None else vjp
    validate.function(grad, "grad", " grad(w, meta, t) -> g (or a model with callable .grad / .vjp)")
    if vjp is not None:
        validate.function(vjp, "vjp", " vjp(w, meta, t, u) -> (g, H_ww u, H_meta,w u)")
    N = _size_of(w0, "w0")
    if v0 is not None and _size_of(v0, "v0") != N:
        raise ValueError(f"v0 has {_size_of(v0, 'v0')} elements but w0 has {N}")
    if group_index is not None:
        gi = np.asarray(group_index)
        if gi.shape != (N,) or not np.issubdtype(gi.dtype, np.integer):
            raise ValueError(f"group_index must be an integer vector of length {N}")
        if N and (gi.min() < 0):
            raise ValueError("group_index must be non-negative")
        G = int(gi.max()) + 1 if N else 1
    else:
        gi, G = None, 1
    alphas2 = np.ascontiguousarray(inputs.schedule(alphas, G, "alphas", 0.0, low_open=True,
                                                   hint=inputs.ALPHA_HINT), dtype=np.float64)
    betas2 = inputs.momentum_schedule(betas, G)
    inputs.same_steps(alphas=alphas2, betas=betas2)
    n = quantize_beta(betas2)
    frac_bits = check_frac_bits(DEFAULT_FRAC_BITS if frac_bits is None else frac_bits)
    validate.scalar(check_every, "check_every", 1, integer=True,
                    hint="check_every must be a positive number of steps")
    if gi is not None and G == 1:
        gi = None
    return grad, vjp, N, alphas2, n, gi, frac_bits


def as_device(cp, x, name, size=None):
    """A flat float64 CuPy array from CuPy, NumPy or any DLPack array (PyTorch, JAX)."""
    if isinstance(x, cp.ndarray):
        out = x
    elif hasattr(x, "__dlpack__") and not isinstance(x, np.ndarray):
        out = cp.from_dlpack(x)
    else:
        out = cp.asarray(x)
    out = out.astype(cp.float64, copy=False).ravel()
    if size is not None and out.size != size:
        raise ValueError(f"{name} has {out.size} elements, expected {size}")
    return out


class Trained:
    """The result of :func:`sgd`: ``w`` (= ``w_T``), ``v``, ``stats``, and :meth:`hypergradient`."""

    def __init__(self, engine, vjp, meta, stats, check_every, progress):
        self._engine, self._vjp, self._meta = engine, vjp, meta
        self.stats, self._check_every, self._progress = stats, check_every, progress

    @property
    def engine(self):
        """The device engine holding the trained state (kernels, buffers, schedules)."""
        return self._engine

    @property
    def w(self):
        return self._engine.w

    @property
    def v(self):
        return self._engine.v

    def hypergradient(self, dw_T, dv_T=None, *, keep=True, check=True):
        """Run training backwards exactly, back-propagating ``dw_T`` (and ``dv_T``), the
        cotangents of ``(w_T, v_T)``.

        Returns what :func:`reversible.checkpoint.hypergradient` returns on the
        CPU: a dict with ``w0``, ``v0``, ``alphas`` and ``betas`` (``(T, G)``;
        the beta gradient is with respect to the applied, quantised beta) and
        ``meta`` (None when ``vjp`` returns no mixed term), here as CuPy arrays.
        With ``keep=True`` the forward state is kept so this can be called
        again.  With ``check=True`` a reversal that does not land bit for bit
        on ``w0``, ``v0`` and empty buffers raises :class:`ReversibilityError`.
        """
        if self._vjp is None:
            raise ValueError("hypergradients need a joint VJP: pass vjp=(w, meta, t, u) -> "
                             "(g, H_ww u, H_meta,w u) to reversible.gpu.sgd")
        validate.flag(keep, "keep")
        validate.flag(check, "check")
        eng = self._engine.copy() if keep else self._engine
        cp = eng.cp
        dw = as_device(cp, dw_T, "dw_T", eng.N)
        dv = cp.zeros(eng.N) if dv_T is None else as_device(cp, dv_T, "dv_T", eng.N)
        d_meta = None
        t0 = time.perf_counter()
        u, w = eng.reverse_begin(dw, dv)
        for t in _steps(range(eng.T - 1, -1, -1), eng.T, self._progress, "exact reverse (GPU)"):
            g, hw, hm = self._vjp(w, self._meta, t, u)
            g, hw = as_device(cp, g, "gradient", eng.N), as_device(cp, hw, "Hessian-vector product", eng.N)
            if hm is not None:
                hm = as_device(cp, hm, "mixed Hessian-vector product")
                d_meta = -hm if d_meta is None else d_meta - hm
            u, w = eng.reverse_step(t, g, hw)
            if t % self._check_every == 0:
                _check_reverse(eng)
        _check_reverse(eng)
        exact = eng.is_back()
        self.stats.update(reverse_seconds=time.perf_counter() - t0, reversed_exactly=exact)
        if check and not exact:
            raise ReversibilityError(not_reversed_message(eng))
        if d_meta is not None and not bool(cp.isfinite(d_meta).all()):
            raise NonFiniteError("the meta hypergradient contains NaN or Inf: a mixed Hessian-vector "
                                 "product overflowed; lower the learning rate or check the loss")
        return {"w0": eng.dw, "v0": eng.dv, "alphas": eng.d_alpha, "betas": eng.d_beta,
                "meta": d_meta}

    def hypergrad(self, dw, dv=None, **kw):
        """The 0.1 name of :meth:`hypergradient`."""
        return self.hypergradient(dw, dv, **kw)


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


def _check_reverse(eng):
    """Device errors of a reverse pass: an empty buffer or an overflow mean it diverged."""
    try:
        eng.check()
    except BufferUnderflowError as err:
        raise BufferUnderflowError(f"reverse pass diverged from the forward trajectory: {err}. "
                                   + NOT_DETERMINISTIC) from err
    except FixedPointOverflowError as err:
        raise ReversibilityError(f"reverse pass diverged from the forward trajectory (a value left "
                                 f"the fixed-point range it stayed in going forward: {err}). "
                                 + NOT_DETERMINISTIC) from err


def _steps(iterable, total, enabled, desc):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, total=total, desc=desc, leave=False)


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
    t0 = time.perf_counter()
    w = eng.w
    for t in _steps(range(eng.T), eng.T, progress, "exact forward (GPU)"):
        g = as_device(cp, grad(w, meta, t), "gradient", N)
        w = cp.empty(N, dtype=cp.float64)
        eng.forward_step(g, t, w)
        if (t + 1) % check_every == 0:
            eng.check()
    eng.check()
    if backend is None:
        cp.cuda.get_current_stream().synchronize()
    bits = eng.buffer_bits()
    stats.update(forward_seconds=time.perf_counter() - t0, buffer_bits=bits,
                 buffer_words=eng.buffer_words(), buffer_bytes=eng.nbytes(),
                 bits_per_element_step=bits / max(N * eng.T, 1),
                 ideal_bits_per_element_step=float(np.mean(np.log2(BETA_ONE / n.astype(float))))
                 if gi is None else None)
    return Trained(eng, vjp, meta, stats, int(check_every), progress)


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
