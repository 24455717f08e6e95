"""The reversible training loop on explicit callables, generic over the update rule.

One loop (:func:`run_forward`, :func:`reverse`) drives any *update rule*: an
object that supplies its exact step on the fixed-point state (forward, and the
two halves of its reversal), its float64 step and its adjoint step (see
:class:`MomentumRule`).  The float methods (checkpointed, truncated, DrMAD,
unrolled) use the same rule's float step and the same adjoint step
(:func:`float_train`, :func:`float_adjoint_step`), so the adjoint recurrence is
written once per rule.  Rules: :class:`MomentumRule` (here) and Adam
(:mod:`reversible.adam_rule`).

SGD with momentum, per step ``t`` and elementwise, with the schedules of each
element's parameter group::

    g_t     = dL(w_t, meta, t)/dw
    v_{t+1} = beta_t * v_t - (1 - beta_t) * g_t
    w_{t+1} = w_t + alpha_t * v_{t+1}

``w`` and ``v`` are int64 fixed point; ``beta_t`` is applied as the exact
rational ``n_t / 2**32`` through an :class:`~reversible.buffer.InfoBuffer`, so
:func:`reverse` recomputes the whole trajectory backwards bit for bit while
accumulating the adjoints (:meth:`MomentumRule.adjoint_step`).

``grad(w, meta, t) -> g`` and ``vjp(w, meta, t, u) -> (g, H_ww u, H_meta,w u)``
are plain callables on flat float64 vectors; the GPU port and the autograd
front end (:mod:`reversible.api`) both supply them.
"""

import contextlib
import time
from dataclasses import dataclass, field

import numpy as np
from autograd.tracer import getval

from . import kernels
from .buffer import BETA_ONE, InfoBuffer, effective_beta, ideal_bits, quantize_beta
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
    _betas: object = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def build(cls, alphas, betas, group_index, num_groups=None):
        group_index = np.asarray(group_index, dtype=np.int64)
        G = int(num_groups if num_groups is not None else (group_index.max() + 1 if group_index.size else 1))
        alphas = as_schedule(alphas, G, "alphas")
        betas = as_schedule(betas, G, "betas")
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
        """The applied momenta ``n / 2**32``, ``(T, G)`` (computed once: the reverse pass reads
        one row per step, and recomputing the whole array each step made it O(T) per step)."""
        if self._betas is None:
            self._betas = self.n / float(BETA_ONE)
        return self._betas

    def rule(self, kernel="auto"):
        """The update rule these schedules drive: SGD with momentum."""
        return MomentumRule(self, kernel)

    def per_element(self, row):
        """Expand a length-G row to the N elements (returns the scalar when G == 1)."""
        if row.shape[0] == 1:
            return row[0]
        counts = self._sorted_counts()
        if counts is None:
            return row[self.group_index]
        return np.repeat(row, counts)

    def _sorted_counts(self):
        """Elements per group when the groups are sorted (the usual layout), else None."""
        if self._counts is None:
            gi = self.group_index
            sorted_ = gi.size == 0 or bool(np.all(gi[1:] >= gi[:-1]))
            self._counts = np.bincount(gi, minlength=self.G) if sorted_ else False
        return None if self._counts is False else self._counts

    def traceable_per_element(self, row):
        """:meth:`per_element` by plain indexing, so that autograd can trace it."""
        return row[0] if self.G == 1 else row[self.group_index]

    def group_sum(self, x):
        """Sum an N-vector within each group: shape (G,)."""
        if self.G == 1:
            return np.array([x.sum()])
        counts = self._sorted_counts()
        if counts is not None and counts.all():      # contiguous, non-empty groups: fast path
            return np.add.reduceat(x, np.cumsum(counts) - counts)
        return np.bincount(self.group_index, weights=x, minlength=self.G)

    def ideal_bits_per_element_step(self):
        counts = np.bincount(self.group_index, minlength=self.G).astype(np.float64)
        return float(np.sum(ideal_bits(self.n) * counts) / max(self.T * counts.sum(), 1))


def as_schedule(x, G, name):
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
        return TrainState(self.W.copy(), self.V.copy(), copy_buffer(self.buffer), self.schedule, self.frac_bits,
                          self.W0.copy(), self.V0.copy(), dict(self.stats))


    def mismatch(self):
        """What differs from the initial state (for the not-reversed error)."""
        return (f"{int(np.count_nonzero(self.W != self.W0))} weights and "
                f"{int(np.count_nonzero(self.V != self.V0))} velocities differ")


def copy_buffer(buffer):
    """An independent copy of an :class:`InfoBuffer` (heads, pointers and tail chunks)."""
    buf = InfoBuffer(buffer.size, buffer.chunk_rows)
    buf.head[:] = buffer.head
    buf.ptr[:] = buffer.ptr
    buf.chunks = [c.copy() for c in buffer.chunks]
    return buf


def _progress(iterable, total, enabled, desc):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, total=total, desc=desc, leave=False)


# ------------------------------------------------------------------ update rules
class Cotangents:
    """Cotangents of a reverse pass: the state's (``w`` and the rule's auxiliary vectors),
    the hyperparameters' (arrays named by the rule) and ``meta``'s (flat, or None)."""

    def __init__(self, rule, dw, daux, meta_size=0, meta=None):
        self.w = np.array(dw, dtype=np.float64)
        self.aux = [np.array(d, dtype=np.float64) for d in daux]
        self.hyper = {name: np.zeros(shape) for name, shape in rule.hyper_shapes().items()}
        if meta is not None:
            self.meta = np.array(meta, dtype=np.float64)
        else:
            self.meta = np.zeros(meta_size) if meta_size else None


class Derivatives:
    """The derivatives one adjoint step asks for at ``(w_t, meta, t)``, checked for size and
    finiteness with the step in every message.

    Calling it with a vector ``u`` returns ``(g, H_ww u, H_meta,w u)``; ``u`` may also be a
    function of the gradient (Adam's combined vector), in which case ``g`` is computed first.
    """

    def __init__(self, grad, vjp, w, meta, t, meta_size, grad_hvp=None):
        self.grad, self.vjp, self.w, self.meta, self.t = grad, vjp, w, meta, t
        self.meta_size = meta_size
        self.grad_hvp = grad_hvp

    def __call__(self, u):
        N, t = self.w.size, self.t
        if callable(u) and self.grad_hvp is not None:
            # one gradient evaluation whose backward pass takes the vector built from it
            def vector(g):
                return u(self.check(g, N, "gradient", t))
            g, hw, hm = self.grad_hvp(self.w, self.meta, t, vector)
            g = self.check(g, N, "gradient", t)
        elif callable(u):
            if self.grad is not None:
                g = self.check(self.grad(self.w, self.meta, t), N, "gradient", t)
            else:
                g = self.check(self.vjp(self.w, self.meta, t, np.zeros(N))[0], N, "gradient", t)
            u = u(g)
            _, hw, hm = self.vjp(self.w, self.meta, t, u)
        else:
            g, hw, hm = self.vjp(self.w, self.meta, t, u)
            g = self.check(g, N, "gradient", t)
        hw = self.check(hw, N, "Hessian-vector product", t)
        if self.meta_size:
            hm = self.check(hm, self.meta_size, "mixed Hessian-vector product", t)
        return g, hw, hm

    @staticmethod
    def check(x, size, what, step):
        """A returned vector as float64 of ``size`` entries, all finite (:func:`check_vector`;
        the GPU front end checks on the device instead)."""
        return check_vector(x, size, what, step)


class UpdateRule:
    """What every update rule shares: its schedule and a lazily loaded kernel.

    ``kernels`` is the rule's kernel registry (a module with ``get(name)``).
    """

    kernels = kernels

    def __init__(self, schedule, kernel="auto"):
        self.schedule = schedule
        self.kernel_name = kernel
        self._kernel = None

    @property
    def kernel(self):
        if self._kernel is None:
            self._kernel = self.kernels.get(self.kernel_name)
        return self._kernel


class MomentumRule(UpdateRule):
    """SGD with momentum as an update rule of the engine (module docstring).

    An update rule supplies, for one training step ``t``: its exact step on the
    fixed-point state (``exact_forward``; ``exact_undo_position`` then
    ``exact_undo_aux`` going back), its float64 step (``float_step``, written
    with operations autograd can trace) and its adjoint step (``adjoint_step``).
    The exact reverse pass and every float method (checkpointed, truncated,
    DrMAD, unrolled) call these same functions, so each formula exists once.
    """

    name = "momentum"
    aux_names = ("v",)
    state_kinds = ("w0", "v0")              # differentiable initial state
    hyper_kinds = ("alphas", "betas")       # differentiable hyperparameters, in argument order

    # ----------------------------------------------------------- exact steps
    def start(self, w0, aux0, frac_bits):
        frac_bits = check_frac_bits(frac_bits)
        v0 = np.zeros_like(w0) if aux0 is None else np.ascontiguousarray(aux0, dtype=np.float64).ravel()
        if v0.shape != w0.shape:
            raise ValueError(f"v0 has {v0.size} elements but w0 has {w0.size}")
        W = to_fixed(w0, frac_bits, "initial weights w0")
        V = to_fixed(v0, frac_bits, "initial velocity v0")
        return TrainState(W, V, InfoBuffer(w0.size), self.schedule, frac_bits, W.copy(), V.copy())

    def exact_forward(self, state, g, t):
        """One exact step in place on ``state``; returns ``float(W)`` of the new weights (the
        kernel writes it in the same pass)."""
        s = self.schedule
        w = np.empty(state.W.size)
        state.W, state.V = self.kernel.forward_step(state.W, state.V, g, s.alphas[t], s.n[t], s,
                                                    state.buffer, state.frac_bits, t, w_out=w)
        return w

    def exact_undo_position(self, state, t):
        s = self.schedule
        state.W = self.kernel.reverse_position(state.W, state.V, s.alphas[t], s, state.frac_bits, t)

    def exact_undo_aux(self, state, g, t):
        s = self.schedule
        state.V = self.kernel.reverse_velocity(state.V, g, s.n[t], s, state.buffer,
                                               state.frac_bits, t)

    def float_aux(self, state):
        return (_to_float(state.V, 2.0 ** -state.frac_bits),)

    def at_start(self, state):
        return (np.array_equal(state.W, state.W0) and np.array_equal(state.V, state.V0)
                and state.buffer.is_empty())

    # ------------------------------------------------------------ float step
    def float_start(self, problem):
        """The float64 initial state ``(w0, (v0,))`` of a :class:`~reversible.problem.Problem`."""
        return problem.w0.copy(), (problem.v0.copy(),)

    def float_hyper(self):
        """The step's hyperparameters as float64 ``(T, G)`` arrays (momenta as applied)."""
        return {"alphas": self.schedule.alphas, "betas": self.schedule.betas}

    def raw_hyper(self, problem):
        """The hyperparameters as the user gave them, by kind."""
        return {"alphas": problem.alphas, "betas": problem.betas}

    def traced_hyper(self, raw):
        """:meth:`float_hyper` from raw values that may be autograd boxes (straight-through
        derivative of the momentum quantisation)."""
        return {"alphas": raw["alphas"],
                "betas": straight_through(raw["betas"], effective_beta(getval(raw["betas"])))}

    def float_step(self, hyper, t, w, aux, g):
        """``v <- beta v - (1 - beta) g``, ``w <- w + alpha v`` (``hyper`` may hold autograd boxes)."""
        per = self.schedule.traceable_per_element
        w, v = momentum_step(w, aux[0], g, per(hyper["alphas"][t]), per(hyper["betas"][t]))
        return w, (v,)

    # --------------------------------------------------------------- adjoint
    def hyper_shapes(self):
        shape = (self.schedule.T, self.schedule.G)
        return {"alphas": shape, "betas": shape}

    def adjoint_step(self, cot, t, w_t, aux_after, derivs, aux_before):
        """Back-propagate ``cot`` (of the state after step ``t``) through step ``t``.

        ``aux_after`` is ``(v_{t+1},)``; ``derivs(u)`` gives ``(g, H_ww u, H_meta,w u)`` at
        ``w_t``; ``aux_before(g)`` gives ``(v_t,)`` (the exact pass undoes its step there)::

            d alpha_t = <dw, v_{t+1}>     dv += alpha dw
            d beta_t  = <dv, v_t + g>     dw -= H_ww (1 - beta) dv    dv *= beta
        """
        s = self.schedule
        alpha = s.per_element(s.alphas[t])
        beta = s.per_element(s.betas[t])
        dw, dv = cot.w, cot.aux[0]
        cot.hyper["alphas"][t] += s.group_sum(dw * aux_after[0])
        dv += alpha * dw
        g, hw, hm = derivs((1.0 - beta) * dv)
        (v_t,) = aux_before(g)
        cot.hyper["betas"][t] += s.group_sum(dv * (v_t + g))
        dw -= hw
        if cot.meta is not None:
            cot.meta -= hm
        dv *= beta

    def result(self, cot, keep_initial=True):
        """The cotangent dict; ``keep_initial=False`` zeroes those of ``w0`` and ``v0``."""
        zero = np.zeros_like(cot.w)
        return {"w0": cot.w if keep_initial else zero,
                "v0": cot.aux[0] if keep_initial else zero.copy(),
                "alphas": cot.hyper["alphas"], "betas": cot.hyper["betas"], "meta": cot.meta}


def momentum_step(w, v, g, alpha, beta):
    """The float64 momentum update: ``v <- beta v - (1 - beta) g``, ``w <- w + alpha v``."""
    v = beta * v - (1.0 - beta) * g
    return w + alpha * v, v


def straight_through(values, applied):
    """``applied`` in value, ``values`` in derivative: how every method sees a quantised factor."""
    return values + (applied - getval(values))


def float_train(rule, grad, w, aux, meta, t_start, t_stop, keep=None):
    """Float64 training with ``rule`` over steps ``t_start .. t_stop-1``; returns ``(w, aux)``.

    ``keep(t, w, aux)`` sees every state for ``t = t_start .. t_stop``.  A NaN or Inf in a
    gradient or in the new state raises :class:`NonFiniteError` naming the step, as the
    exact engine does.
    """
    hyper = rule.float_hyper()
    N = w.size
    for t in range(t_start, t_stop):
        if keep is not None:
            keep(t, w, aux)
        g = check_vector(grad(w, meta, t), N, "gradient", t)
        w, aux = rule.float_step(hyper, t, w, aux, g)
        check_vector(w, N, "weights after the update", t)
        for name, a in zip(rule.aux_names, aux):
            check_vector(a, N, f"optimiser state {name} after the update", t)
    if keep is not None:
        keep(t_stop, w, aux)
    return w, aux


def float_adjoint_step(rule, cot, grad, vjp, meta, t, w_t, aux_t, aux_next, grad_hvp=None):
    """:meth:`adjoint_step` of ``rule`` between two stored float states (float methods)."""
    derivs = Derivatives(grad, vjp, w_t, meta, t, 0 if cot.meta is None else cot.meta.size,
                         grad_hvp)
    rule.adjoint_step(cot, t, w_t, aux_next, derivs, lambda g: aux_t)


# --------------------------------------------------------- the exact engine loop
def forward(grad, w0, schedule, meta=None, v0=None, frac_bits=DEFAULT_FRAC_BITS,
            kernel="auto", progress=False):
    """Train for ``schedule.T`` steps in exact arithmetic; returns the final state.

    The update rule is the schedule's (:class:`Schedule`: momentum, with ``v0``
    the initial velocity).  ``grad(w, meta, t)`` must be a pure function of its
    arguments: the reverse pass calls it again at the same points and checks
    that it gets back to ``w0`` bit for bit.
    """
    rule = schedule.rule(kernel)
    w0 = np.ascontiguousarray(w0, dtype=np.float64).ravel()
    if schedule.group_index.shape != w0.shape:
        raise ValueError("group_index must name a group for every element of w0")
    state = rule.start(w0, v0, frac_bits)
    return run_forward(rule, state, grad, meta, progress)


def run_forward(rule, state, grad, meta=None, progress=False):
    """The exact forward loop of any update rule from a start ``state``."""
    schedule, buffer = rule.schedule, state.buffer
    N = state.W.size
    t_start = time.perf_counter()
    w = _to_float(state.W, 2.0 ** -state.frac_bits)
    for t in _progress(range(schedule.T), schedule.T, progress, f"exact forward ({rule.name})"):
        g = grad(w, meta, t)
        g = check_vector(g, N, "gradient", t)
        w = rule.exact_forward(state, g, t)     # the new weights as float64
    state.stats.update(
        forward_seconds=time.perf_counter() - t_start,
        buffer_bits=buffer.bits(),
        buffer_words=buffer.words(),
        buffer_bytes=buffer.nbytes(),
        ideal_bits_per_element_step=schedule.ideal_bits_per_element_step(),
    )
    elem_steps = max(N * schedule.T, 1)
    state.stats["bits_per_element_step"] = state.stats["buffer_bits"] / elem_steps
    return state


def reverse(state, vjp, dw, dv=None, meta=None, meta_size=0, kernel="auto", progress=False,
            check=True, grad=None, grad_hvp=None):
    """Run the trajectory backwards from ``state`` while back-propagating ``(dw, dv)``.

    Returns the update rule's cotangent dict; for momentum ``w0``, ``v0``,
    ``alphas`` and ``betas`` (``(T, G)``) and ``meta`` (flat, or None).
    ``dv`` is the cotangent of the rule's auxiliary state (momentum: ``v_T``;
    a tuple for rules with several vectors).  ``grad`` is only called by rules
    whose Hessian-vector product depends on the gradient (Adam); without it
    the gradient comes from ``vjp``.  ``grad_hvp(w, meta, t, vector)``, if
    given, does both in one pass: ``(g, H_ww u, H_meta,w u)`` with ``u = vector(g)``.  ``state`` is consumed: on return it
    holds the initial point again.  With ``check=True`` (default) a reversal
    that does not land bit for bit on the initial state and an empty buffer
    raises :class:`ReversibilityError`.
    """
    rule = state.schedule.rule(kernel)
    sched, frac_bits = state.schedule, state.frac_bits
    N = state.W.size
    dw = check_vector(dw, N, "cotangent of w_T", None).copy()
    n_aux = len(rule.aux_names)
    if dv is None:
        daux = [np.zeros(N) for _ in range(n_aux)]
    else:
        dv = (dv,) if n_aux == 1 else tuple(dv)
        daux = [np.zeros(N) if d is None else
                check_vector(d, N, f"cotangent of {name}_T", None).copy()
                for d, name in zip(dv, rule.aux_names)]
    cot = Cotangents(rule, dw, daux, meta_size)
    scale = 2.0 ** -frac_bits
    t_start = time.perf_counter()
    for t in _progress(range(sched.T - 1, -1, -1), sched.T, progress,
                       f"exact reverse ({rule.name})"):
        aux_after = rule.float_aux(state)
        with _diverged_at(t):
            rule.exact_undo_position(state, t)
        w_t = _to_float(state.W, scale)

        def aux_before(g, t=t):
            with _diverged_at(t):
                rule.exact_undo_aux(state, g, t)
            return rule.float_aux(state)

        derivs = Derivatives(grad, vjp, w_t, meta, t, meta_size, grad_hvp)
        rule.adjoint_step(cot, t, w_t, aux_after, derivs, aux_before)
    exact = rule.at_start(state)
    state.stats.update(reverse_seconds=time.perf_counter() - t_start, reversed_exactly=exact)
    if check and not exact:
        _raise_not_reversed(state)
    return rule.result(cot)


_NOT_DETERMINISTIC = ("The training loss must be a deterministic function of (w, meta, t): draw "
                      "minibatches from the step index t (e.g. numpy.random.Generator(Philox(key="
                      "(seed, t)))), not from global random state or mutable data")


@contextlib.contextmanager
def _diverged_at(t):
    """In the reverse pass, overflow, an empty buffer or a non-finite recomputed increment (the
    gradient itself is checked outside) can only mean the trajectory diverged."""
    try:
        yield
    except (BufferUnderflowError, FixedPointOverflowError, NonFiniteError) as err:
        raise diverged_error(err, t) from err


def diverged_error(err, t):
    """The error of a reverse pass whose step ``t`` failed with ``err`` (an empty buffer,
    overflow or a non-finite recomputed value: the trajectory diverged); every engine's wording."""
    if isinstance(err, BufferUnderflowError):
        return BufferUnderflowError(f"reverse pass diverged from the forward trajectory at step {t}: "
                                    f"{err}. {_NOT_DETERMINISTIC}")
    if isinstance(err, FixedPointOverflowError):
        return ReversibilityError(f"reverse pass diverged from the forward trajectory at step {t} "
                                  f"(a value left the fixed-point range it stayed in going forward: "
                                  f"{err}). {_NOT_DETERMINISTIC}")
    return ReversibilityError(f"reverse pass diverged from the forward trajectory at step {t} "
                              f"(a recomputed value is not finite: {err}). {_NOT_DETERMINISTIC}")


def _raise_not_reversed(state):
    raise not_reversed_error(state.mismatch(), state.buffer.is_empty())


def not_reversed_error(mismatch, buffer_empty):
    """The error of a reverse pass that ended off its starting point (``mismatch`` says what differs)."""
    return ReversibilityError(
        f"the reverse pass did not return to the starting point bit for bit: {mismatch}, "
        f"buffer empty: {buffer_empty}. " + _NOT_DETERMINISTIC)


def _to_float(X, scale):
    """``to_float(X, frac_bits)`` in one pass (same cast, same product: identical bits)."""
    return np.multiply(X, scale)


def _all_finite(x):
    """Whether ``x`` has no NaN / Inf.  A finite sum proves it (NaN and Inf propagate through
    a sum); only when the sum is not finite (or x is small) is the elementwise test run."""
    if x.size > 4096:
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(np.add.reduce(x)):
                return True
    return bool(np.isfinite(x).all())


def check_vector(x, size, what, step):
    x = np.asarray(x, dtype=np.float64)
    if x.size != size:
        raise size_error(what, step, x.size, size)
    x = x.reshape(size)
    if not _all_finite(x):
        raise nonfinite_error(what, step, int(np.sum(~np.isfinite(x))), size)
    return x


def size_error(what, step, got, size):
    """The error for a vector of ``got`` entries where ``size`` were expected."""
    where = f" at step {step}" if step is not None else ""
    return ValueError(f"{what}{where} has {got} elements, expected {size}")


def nonfinite_error(what, step, count, size):
    """The error for ``count`` of ``size`` entries of a vector that are NaN or Inf."""
    where = f" at step {step}" if step is not None else ""
    return NonFiniteError(
        f"{what}{where} contains NaN or Inf ({count} of {size} entries): lower the learning rate "
        "or check the loss for log(0) / overflow")
