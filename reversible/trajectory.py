"""Reversible SGD with momentum on explicit callables (no autograd in here).

Update rule (DESIGN.md section 2), per step ``t`` and elementwise, with the
schedules of each element's parameter group::

    g_t     = dL(w_t, meta, t)/dw
    v_{t+1} = beta_t * v_t - (1 - beta_t) * g_t
    w_{t+1} = w_t + alpha_t * v_{t+1}

``w`` and ``v`` are int64 fixed point; ``beta_t`` is applied as the exact
rational ``n_t / 2**32`` through an :class:`~reversible.buffer.InfoBuffer`, so
:func:`reverse` recomputes the whole trajectory backwards bit for bit while
accumulating the adjoints of DESIGN.md section 2.

``grad(w, meta, t) -> g`` and ``vjp(w, meta, t, u) -> (g, H_ww u, H_meta,w u)``
are plain callables on flat float64 vectors; the GPU port and the autograd
front end (:mod:`reversible.api`) both supply them.
"""

import contextlib
import time
from dataclasses import dataclass, field

import numpy as np

from . import kernels
from .buffer import BETA_ONE, InfoBuffer, ideal_bits, quantize_beta
from .errors import (BufferUnderflowError, FixedPointOverflowError, NonFiniteError,
                     ReversibilityError)
from .fixedpoint import DEFAULT_FRAC_BITS, check_frac_bits, to_fixed, to_float


@dataclass
class Schedule:
    """Per-step, per-group learning rates and quantised momenta.

    ``alphas`` is float64 ``(T, G)``; ``n`` int64 ``(T, G)`` with
    ``beta = n / 2**32``; ``group_index`` maps each of the N elements to its group.
    """

    alphas: np.ndarray
    n: np.ndarray
    group_index: np.ndarray
    _counts: object = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def build(cls, alphas, betas, group_index, num_groups=None):
        group_index = np.asarray(group_index, dtype=np.int64)
        G = int(num_groups if num_groups is not None else (group_index.max() + 1 if group_index.size else 1))
        alphas = _as_schedule(alphas, G, "alphas")
        betas = _as_schedule(betas, G, "betas")
        if alphas.shape[0] != betas.shape[0]:
            raise ValueError(f"alphas has {alphas.shape[0]} steps but betas has {betas.shape[0]}; "
                             "both schedules need one row per training step")
        return cls(alphas, quantize_beta(betas), group_index)

    @property
    def T(self):
        return self.alphas.shape[0]

    @property
    def G(self):
        return self.alphas.shape[1]

    @property
    def betas(self):
        return self.n / float(BETA_ONE)

    def per_element(self, row):
        """Expand a length-G row to the N elements (returns the scalar when G == 1)."""
        if row.shape[0] == 1:
            return row[0]
        if self._counts is None:         # sorted groups (the usual layout): np.repeat is faster
            gi = self.group_index
            sorted_ = gi.size == 0 or bool(np.all(gi[1:] >= gi[:-1]))
            self._counts = np.bincount(gi, minlength=self.G) if sorted_ else False
        if self._counts is False:
            return row[self.group_index]
        return np.repeat(row, self._counts)

    def group_sum(self, x):
        """Sum an N-vector within each group: shape (G,)."""
        if self.G == 1:
            return np.array([x.sum()])
        return np.bincount(self.group_index, weights=x, minlength=self.G)

    def ideal_bits_per_element_step(self):
        counts = np.bincount(self.group_index, minlength=self.G).astype(np.float64)
        return float(np.sum(ideal_bits(self.n) * counts) / max(self.T * counts.sum(), 1))


def _as_schedule(x, G, name):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = np.repeat(x[:, None], G, axis=1)
    if x.ndim != 2 or x.shape[1] != G:
        raise ValueError(f"{name} must have shape (T,) or (T, {G}) for {G} parameter group(s); "
                         f"got {x.shape}")
    if x.shape[0] < 1:
        raise ValueError(f"{name} must have at least one step")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or Inf")
    return np.ascontiguousarray(x)


@dataclass
class TrainState:
    """Everything the reverse pass needs: final fixed-point state, buffer and schedules."""

    W: np.ndarray            # int64 fixed point, w_T
    V: np.ndarray            # int64 fixed point, v_T
    buffer: InfoBuffer
    schedule: Schedule
    frac_bits: int
    W0: np.ndarray           # int64 fixed point of w_0 (to check the reversal)
    V0: np.ndarray
    stats: dict = field(default_factory=dict)

    @property
    def w(self):
        return to_float(self.W, self.frac_bits)

    @property
    def v(self):
        return to_float(self.V, self.frac_bits)

    def copy(self):
        buf = InfoBuffer(self.buffer.size, self.buffer.chunk_rows)
        buf.head[:] = self.buffer.head
        buf.ptr[:] = self.buffer.ptr
        buf.chunks = [c.copy() for c in self.buffer.chunks]
        return TrainState(self.W.copy(), self.V.copy(), buf, self.schedule, self.frac_bits,
                          self.W0.copy(), self.V0.copy(), dict(self.stats))


def _progress(iterable, total, enabled, desc):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, total=total, desc=desc, leave=False)


def forward(grad, w0, schedule, meta=None, v0=None, frac_bits=DEFAULT_FRAC_BITS,
            kernel="auto", progress=False):
    """Train for ``schedule.T`` steps in exact arithmetic; returns a :class:`TrainState`.

    ``grad(w, meta, t)`` must be a pure function of its arguments: the reverse
    pass calls it again at the same points and checks that it gets back to
    ``w0`` bit for bit.
    """
    frac_bits = check_frac_bits(frac_bits)
    w0 = np.ascontiguousarray(w0, dtype=np.float64).ravel()
    v0 = np.zeros_like(w0) if v0 is None else np.ascontiguousarray(v0, dtype=np.float64).ravel()
    if v0.shape != w0.shape:
        raise ValueError(f"v0 has {v0.size} elements but w0 has {w0.size}")
    if schedule.group_index.shape != w0.shape:
        raise ValueError("group_index must name a group for every element of w0")
    step_fwd = kernels.get(kernel).forward_step
    W = to_fixed(w0, frac_bits, "initial weights w0")
    V = to_fixed(v0, frac_bits, "initial velocity v0")
    buffer = InfoBuffer(w0.size)
    state = TrainState(W, V, buffer, schedule, frac_bits, W.copy(), V.copy())
    t_start = time.perf_counter()
    w = _to_float(state.W, 2.0 ** -frac_bits)
    for t in _progress(range(schedule.T), schedule.T, progress, "exact forward"):
        g = grad(w, meta, t)
        g = _check_vector(g, w0.size, "gradient", t)
        w = np.empty(w0.size)           # the kernel writes float(W) of the new weights here
        state.W, state.V = step_fwd(state.W, state.V, g, schedule.alphas[t], schedule.n[t],
                                    schedule, buffer, frac_bits, t, w_out=w)
    state.stats.update(
        forward_seconds=time.perf_counter() - t_start,
        buffer_bits=buffer.bits(),
        buffer_words=buffer.words(),
        buffer_bytes=buffer.nbytes(),
        ideal_bits_per_element_step=schedule.ideal_bits_per_element_step(),
    )
    elem_steps = max(w0.size * schedule.T, 1)
    state.stats["bits_per_element_step"] = state.stats["buffer_bits"] / elem_steps
    return state


def reverse(state, vjp, dw, dv=None, meta=None, meta_size=0, kernel="auto", progress=False,
            check=True):
    """Run the trajectory backwards from ``state`` while back-propagating ``(dw, dv)``.

    Returns a dict with ``w0``, ``v0`` (cotangents), ``alphas`` and ``betas``
    (``(T, G)``) and ``meta`` (flat, or None).  ``state`` is consumed: on
    return it holds the initial point again.  With ``check=True`` (default) a
    reversal that does not land bit for bit on ``w0``, ``v0`` and an empty
    buffer raises :class:`ReversibilityError`.
    """
    sched, frac_bits, buffer = state.schedule, state.frac_bits, state.buffer
    k = kernels.get(kernel)
    N = state.W.size
    dw = _check_vector(dw, N, "cotangent of w_T", None).copy()
    dv = np.zeros(N) if dv is None else _check_vector(dv, N, "cotangent of v_T", None).copy()
    d_alpha = np.zeros((sched.T, sched.G))
    d_beta = np.zeros((sched.T, sched.G))
    d_meta = np.zeros(meta_size) if meta_size else None
    scale = 2.0 ** -frac_bits
    betas = sched.n / float(BETA_ONE)
    one_minus_betas = 1.0 - betas
    t_start = time.perf_counter()
    for t in _progress(range(sched.T - 1, -1, -1), sched.T, progress, "exact reverse"):
        alpha_e = sched.per_element(sched.alphas[t])
        n_t = sched.n[t]
        d_alpha[t] = sched.group_sum(dw * _to_float(state.V, scale))
        with _diverged_at(t):
            state.W = k.reverse_position(state.W, state.V, sched.alphas[t], sched, frac_bits, t)
        dv += alpha_e * dw
        # (1 - beta) is per element: it scales the cotangent before the Hessian product
        g, hw, hm = vjp(_to_float(state.W, scale), meta, t,
                        sched.per_element(one_minus_betas[t]) * dv)
        g = _check_vector(g, N, "gradient", t)
        hw = _check_vector(hw, N, "Hessian-vector product", t)
        with _diverged_at(t):
            state.V = k.reverse_velocity(state.V, g, n_t, sched, buffer, frac_bits, t)
        d_beta[t] = sched.group_sum(dv * (_to_float(state.V, scale) + g))
        dw -= hw
        if d_meta is not None:
            d_meta -= _check_vector(hm, meta_size, "mixed Hessian-vector product", t)
        dv *= sched.per_element(betas[t])
    exact = (np.array_equal(state.W, state.W0) and np.array_equal(state.V, state.V0)
             and buffer.is_empty())
    state.stats.update(reverse_seconds=time.perf_counter() - t_start, reversed_exactly=exact)
    if check and not exact:
        _raise_not_reversed(state)
    return {"w0": dw, "v0": dv, "alphas": d_alpha, "betas": d_beta, "meta": d_meta}


_NOT_DETERMINISTIC = ("The training loss must be a deterministic function of (w, meta, t): draw "
                      "minibatches from the step index t (e.g. numpy.random.Generator(Philox(key="
                      "(seed, t)))), not from global random state or mutable data")


@contextlib.contextmanager
def _diverged_at(t):
    """In the reverse pass, overflow or an empty buffer can only mean the trajectory diverged."""
    try:
        yield
    except BufferUnderflowError as err:
        raise BufferUnderflowError(f"reverse pass diverged from the forward trajectory at step {t}: "
                                   f"{err}. {_NOT_DETERMINISTIC}") from err
    except FixedPointOverflowError as err:
        raise ReversibilityError(f"reverse pass diverged from the forward trajectory at step {t} "
                                 f"(a value left the fixed-point range it stayed in going forward: "
                                 f"{err}). {_NOT_DETERMINISTIC}") from err


def _raise_not_reversed(state):
    dw_bits = int(np.count_nonzero(state.W != state.W0))
    dv_bits = int(np.count_nonzero(state.V != state.V0))
    raise ReversibilityError(
        f"the reverse pass did not return to the starting point bit for bit: {dw_bits} weights "
        f"and {dv_bits} velocities differ, buffer empty: {state.buffer.is_empty()}. "
        + _NOT_DETERMINISTIC)


def _to_float(X, scale):
    """``to_float(X, frac_bits)`` in one pass (same cast, same product: identical bits)."""
    return np.multiply(X, scale)


def _all_finite(x):
    """Whether ``x`` has no NaN / Inf.  A finite sum proves it (NaN and Inf propagate through
    a sum); only when the sum is not finite (or x is small) is the elementwise test run."""
    if x.size > 4096 and np.isfinite(np.add.reduce(x)):
        return True
    return bool(np.isfinite(x).all())


def _check_vector(x, size, what, step):
    x = np.asarray(x, dtype=np.float64)
    if x.size != size:
        where = f" at step {step}" if step is not None else ""
        raise ValueError(f"{what}{where} has {x.size} elements, expected {size}")
    x = x.reshape(size)
    if not _all_finite(x):
        where = f" at step {step}" if step is not None else ""
        raise NonFiniteError(
            f"{what}{where} contains NaN or Inf ({int(np.sum(~np.isfinite(x)))} of {size} "
            "entries): lower the learning rate or check the loss for log(0) / overflow")
    return x
