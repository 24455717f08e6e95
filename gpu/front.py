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

from reversible.buffer import BETA_ONE, quantize_beta
from reversible.errors import NonFiniteError, ReversibilityError
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


def _schedule(x, G, name):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = np.repeat(x[:, None], G, axis=1)
    if x.ndim != 2 or x.shape[1] != G or x.shape[0] < 1:
        raise ValueError(f"{name} must have shape (T,) or (T, {G}) for {G} parameter group(s); "
                         f"got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or Inf")
    return np.ascontiguousarray(x)


def check_args(grad, w0, alphas, betas, *, vjp=None, v0=None, frac_bits=None, group_index=None,
               check_every=256):
    """Validate the arguments of :func:`sgd` without touching the GPU.

    Returns ``(grad, vjp, N, alphas (T, G), n (T, G), group_index or None, frac_bits)``.
    """
    if hasattr(grad, "grad") and callable(grad.grad):
        model = grad
        grad = model.grad
        vjp = getattr(model, "vjp", None) if vjp is None else vjp
    if not callable(grad):
        raise TypeError("grad must be a callable grad(w, meta, t) -> g, or a model with .grad/.vjp")
    if vjp is not None and not callable(vjp):
        raise TypeError("vjp must be a callable vjp(w, meta, t, u) -> (g, H_ww u, H_meta,w u)")
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
    alphas2, betas2 = _schedule(alphas, G, "alphas"), _schedule(betas, G, "betas")
    if alphas2.shape[0] != betas2.shape[0]:
        raise ValueError(f"alphas has {alphas2.shape[0]} steps but betas has {betas2.shape[0]}; "
                         "give both one row per training step")
    n = quantize_beta(betas2)
    frac_bits = check_frac_bits(DEFAULT_FRAC_BITS if frac_bits is None else frac_bits)
    if int(check_every) < 1:
        raise ValueError(f"check_every must be a positive number of steps; got {check_every}")
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
    """The result of :func:`sgd`: ``w`` (= ``w_T``), ``v``, ``stats``, and :meth:`hypergrad`."""

    def __init__(self, engine, vjp, meta, stats, check_every, progress):
        self._engine, self._vjp, self._meta = engine, vjp, meta
        self.stats, self._check_every, self._progress = stats, check_every, progress

    @property
    def w(self):
        return self._engine.w

    @property
    def v(self):
        return self._engine.v

    def hypergrad(self, dw, dv=None, *, keep=True, check=True):
        """Run training backwards exactly, back-propagating ``(dw, dv)`` = cotangents of ``(w_T, v_T)``.

        Returns a dict of CuPy arrays: ``w0``, ``v0``, ``alphas`` and ``betas``
        (``(T, G)``; the beta gradient is with respect to the applied, quantised
        beta) and ``meta`` (None when ``vjp`` returns no mixed term).  With
        ``keep=True`` the forward state is kept so this can be called again.
        With ``check=True`` a reversal that does not land bit for bit on
        ``w0``, ``v0`` and empty buffers raises :class:`ReversibilityError`.
        """
        if self._vjp is None:
            raise ValueError("hypergradients need a joint VJP: pass vjp=(w, meta, t, u) -> "
                             "(g, H_ww u, H_meta,w u) to reversible.gpu.sgd")
        eng = self._engine.copy() if keep else self._engine
        cp = eng.cp
        dw = as_device(cp, dw, "dw", eng.N)
        dv = cp.zeros(eng.N) if dv is None else as_device(cp, dv, "dv", eng.N)
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
                eng.check()
        eng.check()
        exact = eng.is_back()
        self.stats.update(reverse_seconds=time.perf_counter() - t0, reversed_exactly=exact)
        if check and not exact:
            raise ReversibilityError(
                "the reverse pass did not return to the starting point bit for bit on the GPU: the "
                "gradient must be a deterministic function of (w, meta, t) (draw minibatches from t; "
                "avoid non-deterministic reductions such as atomics in the gradient)")
        if d_meta is not None and not bool(cp.isfinite(d_meta).all()):
            raise NonFiniteError("the meta hypergradient contains NaN or Inf")
        return {"w0": eng.dw, "v0": eng.dv, "alphas": eng.d_alpha, "betas": eng.d_beta,
                "meta": d_meta}


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
    """
    grad, vjp, N, alphas2, n, gi, frac_bits = check_args(
        grad, w0, alphas, betas, vjp=vjp, v0=v0, frac_bits=frac_bits, group_index=group_index,
        check_every=check_every)
    cp = require_cupy() if backend is None else backend.xp
    from .engine import Engine
    w0d = as_device(cp, w0, "w0", N)
    v0d = cp.zeros(N) if v0 is None else as_device(cp, v0, "v0", N)
    eng = Engine(w0d, v0d, alphas2, n, gi, frac_bits, backend=backend)
    stats = {} if stats is None else stats
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
