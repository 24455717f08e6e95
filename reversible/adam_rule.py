"""Adam and AdamW as an update rule of the exact engine (PyTorch's semantics).

Per step ``t``, elementwise, with each element's group schedules::

    g  = dL(w_t, meta, t)/dw
    m <- beta1 m + (1 - beta1) g                 (first moment)
    s <- beta2 s + (1 - beta2) g^2               (second moment)
    w <- d w - alpha (m / c1) / (sqrt(s / c2) + eps)

with ``c1 = 1 - prod(beta1 so far)``, ``c2 = 1 - prod(beta2 so far)`` and
AdamW's decoupled decay ``d = 1 - alpha * weight_decay``.  The exact engine
holds ``w``, ``m`` and ``s`` as int64 fixed point; the three multiplications
(by ``beta1``, ``beta2`` and ``d``, each quantised like a momentum, see
:func:`reversible.effective_beta`) go through the information buffer, and the
two additions and the position increment are rounded to the grid.  Backwards,
the increment is recomputed from ``(m, s)`` bit for bit and added back, the
decay divided out, ``g`` recomputed at the recovered ``w``, and the two moment
updates undone through the buffer.  Per element, the buffer operations are
pushed in the order ``m, s, w`` and popped ``w, s, m``.

Fixed-point formats (:class:`AdamFormat`): ``w`` has ``frac_bits`` fractional
bits like SGD's weights.  ``m`` and ``s`` get their own number of fractional
bits per parameter group, by default chosen at the first step from that
step's gradient so that the group's largest ``|g|`` (``g^2``) sits
``HEADROOM_M`` (``HEADROOM_S``) bits below the int64 limit: ``s``, which can
be 1e-12 and below, keeps about 45 significant bits instead of losing them
all to a shared grid.  The trade-off: a gradient that later grows by more than
``2**HEADROOM_M`` (``2**(HEADROOM_S / 2)`` for ``s``) overflows, loudly, and
the remedy is to give the formats by hand (``frac_bits={"m": ..., "s": ...}``).

The adjoint (:meth:`AdamRule.adjoint_step`) is derived in ``docs/adam.md``.
"""

import functools
from dataclasses import dataclass, field

import autograd.numpy as anp
import numpy as np
from autograd.extend import defjvp, defvjp, primitive
from autograd.tracer import getval

from . import trajectory
from .buffer import BETA_ONE, InfoBuffer, effective_beta, ideal_bits, quantize_beta
from .errors import FixedPointOverflowError, NonFiniteError
from .fixedpoint import DEFAULT_FRAC_BITS, check_frac_bits, checked_add, to_fixed, to_float

HEADROOM_M = 8      # bits between the first step's largest |g| and the int64 limit of m
HEADROOM_S = 16     # bits between the first step's largest g^2 and the int64 limit of s
_FORMAT_REMEDY = ("the first and second moments use per-group fixed-point formats chosen at "
                  "the first step from its gradient: if gradients grow much later in training, "
                  "give the formats by hand, e.g. frac_bits={'w': 52, 'm': 40, 's': 60} "
                  "(fewer bits: more range), or lower the learning rate")


# ----------------------------------------------------------------- schedules
@dataclass
class AdamSchedule(trajectory.Schedule):
    """Adam's per-step, per-group hyperparameters: ``alphas`` ``(T, G)``; ``n`` and ``n2`` the
    quantised ``beta1`` / ``beta2``; ``eps`` ``(G,)``; ``weight_decay`` ``(T, G)`` and its
    quantised decay factor ``n_decay = quantize(1 - alpha * weight_decay)``."""

    n2: np.ndarray = None
    eps: np.ndarray = None
    weight_decay: np.ndarray = None
    n_decay: np.ndarray = None
    _corrections: object = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def build(cls, alphas, beta1s, beta2s, group_index, num_groups=None, eps=1e-8,
              weight_decay=0.0):
        group_index = np.asarray(group_index, dtype=np.int64)
        G = int(num_groups if num_groups is not None else (group_index.max() + 1 if group_index.size else 1))
        alphas = trajectory.as_schedule(alphas, G, "alphas")
        b1 = trajectory.as_schedule(beta1s, G, "beta1s")
        b2 = trajectory.as_schedule(beta2s, G, "beta2s")
        for name, x in (("beta1s", b1), ("beta2s", b2)):
            if x.shape[0] != alphas.shape[0]:
                raise ValueError(f"alphas has {alphas.shape[0]} steps but {name} has {x.shape[0]}; "
                                 "every schedule needs one row per training step")
        n1 = _quantize(b1, "beta1s")
        n2 = _quantize(b2, "beta2s")
        for name, n in (("beta1s", n1), ("beta2s", n2)):
            if np.any(n[0] == BETA_ONE):
                raise ValueError(f"{name} at the first step must be below 1 (it rounds to 1): "
                                 "Adam's bias correction 1 - prod(beta) would be zero")
        eps = np.asarray(eps, dtype=np.float64)
        if eps.ndim == 0:
            eps = np.full(G, float(eps))
        if eps.shape != (G,) or not np.all(np.isfinite(eps)) or np.any(eps <= 0):
            raise ValueError(f"eps must be a positive finite scalar or one per group ({G}); "
                             f"got {eps!r}")
        wd = np.asarray(weight_decay, dtype=np.float64)
        T = alphas.shape[0]
        if wd.ndim == 0 or wd.shape == (G,):
            wd = np.broadcast_to(wd, (T, G)).copy()
        if wd.shape != (T, G):
            raise ValueError(f"weight_decay must be a scalar, one per group ({G},) or a schedule "
                             f"({T}, {G}); got shape {wd.shape}")
        if not np.all(np.isfinite(wd)) or np.any(wd < 0):
            raise ValueError("weight_decay must be finite and >= 0")
        decay = 1.0 - alphas * wd
        if np.any((decay <= 0) | (decay > 1)):
            raise ValueError("AdamW's decay factor 1 - alpha * weight_decay must lie in (0, 1]; "
                             f"got {float(decay[(decay <= 0) | (decay > 1)][0])!r} (negative "
                             "learning rate with decay, or alpha * weight_decay >= 1)")
        return cls(alphas, n1, group_index, n2=n2, eps=np.ascontiguousarray(eps),
                   weight_decay=np.ascontiguousarray(wd), n_decay=quantize_beta(decay))

    @functools.cached_property
    def beta1s(self):
        return self.n / float(BETA_ONE)     # computed once: the reverse pass reads a row per step

    @functools.cached_property
    def beta2s(self):
        return self.n2 / float(BETA_ONE)     # computed once: the reverse pass reads a row per step

    @functools.cached_property
    def decay(self):
        return self.n_decay / float(BETA_ONE)     # computed once: the reverse pass reads a row per step

    def bias_corrections(self):
        """``(c1, c2)``, each ``(T, G)``: ``1 - prod(beta so far)`` of the applied betas."""
        if self._corrections is None:
            self._corrections = (np.asarray(bias_correction(self.beta1s)),
                                 np.asarray(bias_correction(self.beta2s)))
        return self._corrections

    def ideal_bits_per_element_step(self):
        counts = np.bincount(self.group_index, minlength=self.G).astype(np.float64)
        per = ideal_bits(self.n) + ideal_bits(self.n2) + ideal_bits(self.n_decay)
        return float(np.sum(per * counts) / max(self.T * counts.sum(), 1))

    def rule(self, kernel="auto"):
        return AdamRule(self, kernel)


@primitive
def sqrt0(x):
    """``sqrt(x)`` whose derivative at 0 is taken as 0 (not inf): where ``s = 0`` the gradient
    has been 0 at every step, so ``m = 0`` too and Adam's increment does not depend on ``s``
    there; autograd's ``inf * 0`` would turn every hypergradient into NaN."""
    return np.sqrt(x)


def _half_over(ans):
    with np.errstate(divide="ignore"):
        return np.where(ans > 0, 0.5 / np.where(ans > 0, ans, 1.0), 0.0)


defvjp(sqrt0, lambda ans, x: lambda g: g * _half_over(ans))
defjvp(sqrt0, lambda g, ans, x: g * _half_over(ans))


def _quantize(betas, name):
    try:
        return quantize_beta(betas)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None


def bias_correction(betas):
    """``1 - cumulative product`` down the rows of ``betas`` (``(T, G)``; autograd-traceable)."""
    prod, rows = 1.0, []
    for t in range(betas.shape[0]):
        prod = prod * betas[t]
        rows.append(1.0 - prod)
    return anp.stack(rows)


def float_hyper(alphas, beta1s, beta2s, eps, weight_decay):
    """The float step's hyperparameters from ``(T, G)`` arrays (autograd boxes allowed): betas and
    the decay factor as the engine applies them, with straight-through derivatives."""
    b1 = trajectory.straight_through(beta1s, effective_beta(getval(beta1s)))
    b2 = trajectory.straight_through(beta2s, effective_beta(getval(beta2s)))
    decay = 1.0 - alphas * weight_decay
    decay = trajectory.straight_through(decay, effective_beta(getval(decay)))
    return {"alphas": alphas, "beta1s": b1, "beta2s": b2, "c1": bias_correction(b1),
            "c2": bias_correction(b2), "eps": eps, "decay": decay, "weight_decay": weight_decay}


# ------------------------------------------------------------------- formats
@dataclass
class AdamFormat:
    """Fractional bits of ``w`` (int) and of ``m`` and ``s`` per group (``(G,)`` int arrays,
    or None until the first gradient chooses them)."""

    w: int
    m: np.ndarray = None
    s: np.ndarray = None

    @classmethod
    def parse(cls, frac_bits, G):
        if frac_bits is None or isinstance(frac_bits, (int, np.integer)) and not isinstance(frac_bits, bool):
            w = check_frac_bits(DEFAULT_FRAC_BITS if frac_bits is None else frac_bits)
            return cls(w)
        if not isinstance(frac_bits, dict) or set(frac_bits) - {"w", "m", "s"}:
            raise ValueError("frac_bits for Adam must be an int (the weights') or a dict with keys "
                             f"'w', 'm', 's' (ints, or 'auto' for m and s); got {frac_bits!r}")
        fmt = cls(check_frac_bits(frac_bits.get("w", DEFAULT_FRAC_BITS)))
        for key in ("m", "s"):
            spec = frac_bits.get(key, "auto")
            if isinstance(spec, str) and spec == "auto":
                continue
            arr = np.asarray(spec)
            if arr.dtype.kind not in "iu" or arr.ndim > 1 or (arr.ndim == 1 and arr.shape != (G,)) \
                    or np.any(arr < -60) or np.any(arr > 400):
                raise ValueError(f"frac_bits[{key!r}] must be 'auto', an integer in [-60, 400] "
                                 f"or one per group ({G}); got {spec!r}")
            setattr(fmt, key, np.broadcast_to(arr.astype(np.int64), (G,)).copy())
        return fmt

    def resolve(self, g, schedule):
        """Choose the automatic formats from the first gradient (group by group)."""
        if self.m is not None and self.s is not None:
            return
        amax = np.zeros(schedule.G)
        np.maximum.at(amax, schedule.group_index, np.abs(g))
        amax[amax == 0] = 1.0
        e = np.frexp(amax)[1].astype(np.int64)          # amax < 2**e
        if self.m is None:
            self.m = np.clip(62 - (e + HEADROOM_M), -60, 400)
        if self.s is None:
            self.s = np.clip(62 - (2 * e + HEADROOM_S), -60, 400)

    def as_dict(self):
        return {"w": self.w, "m": None if self.m is None else self.m.tolist(),
                "s": None if self.s is None else self.s.tolist()}


# --------------------------------------------------------------------- state
@dataclass
class AdamState:
    """What Adam's reverse pass needs: final ``W, M, S``, the buffer, schedules and formats."""

    W: np.ndarray
    M: np.ndarray
    S: np.ndarray
    buffer: object
    schedule: AdamSchedule
    fmt: AdamFormat
    W0: np.ndarray
    stats: dict = field(default_factory=dict)

    @property
    def frac_bits(self):
        return self.fmt.w

    @property
    def w(self):
        return to_float(self.W, self.fmt.w)

    @property
    def m(self):
        return self.M * self._scale(self.fmt.m)

    @property
    def s(self):
        return self.S * self._scale(self.fmt.s)

    def _scale(self, bits):
        if bits is None:
            return 1.0
        return self.schedule.per_element(2.0 ** -bits.astype(np.float64))

    def copy(self):
        fmt = AdamFormat(self.fmt.w, None if self.fmt.m is None else self.fmt.m.copy(),
                         None if self.fmt.s is None else self.fmt.s.copy())
        return AdamState(self.W.copy(), self.M.copy(), self.S.copy(),
                         trajectory.copy_buffer(self.buffer), self.schedule, fmt, self.W0.copy(),
                         dict(self.stats))

    def mismatch(self):
        return (f"{int(np.count_nonzero(self.W != self.W0))} weights, "
                f"{int(np.count_nonzero(self.M))} first moments and "
                f"{int(np.count_nonzero(self.S))} second moments differ")


# ------------------------------------------------- the exact step (NumPy spec)
M_STEP = "first-moment step (1 - beta1) g"
S_STEP = "second-moment step (1 - beta2) g^2"
W_STEP = "weight step alpha m / (sqrt(s) + eps)"
M_NAME, S_NAME, W_NAME = "first moment m", "second moment s", "weights"


def fix_error(what, t, finite):
    """The error for a value that cannot be rounded to the grid (every Adam kernel raises it)."""
    if not finite:
        return NonFiniteError(f"{what} at step {t} contains NaN or Inf")
    return overflow_error(what, t)


def overflow_error(what, t):
    return FixedPointOverflowError(f"{what} at step {t} overflows its fixed-point range; "
                                   + _FORMAT_REMEDY)


def negative_s_error(t):
    return NonFiniteError(f"second moment s at step {t} is negative: the state is corrupt")


def _fix(x, scale, what, t):
    """``rint(x * scale)`` as int64 (``scale`` a power of two, scalar or per element)."""
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise fix_error(what, t, False)
    with np.errstate(over="ignore"):
        y = np.rint(x * scale)
    if np.any(np.abs(y) >= 2.0 ** 63):
        raise fix_error(what, t, True)
    return y.astype(np.int64)


def _add(X, D, what, t, subtract=False):
    try:
        return checked_add(X, D, 1, what, t, subtract)
    except FixedPointOverflowError:
        raise overflow_error(what, t) from None


class _StepConstants:
    """Step ``t``'s per-element constants, identical in both directions."""

    def __init__(self, state, t):
        s, per = state.schedule, state.schedule.per_element
        self.n1, self.n2, self.nd = per(s.n[t]), per(s.n2[t]), per(s.n_decay[t])
        self.one_minus_b1 = (BETA_ONE - self.n1) / float(BETA_ONE)        # exact in float64
        self.one_minus_b2 = (BETA_ONE - self.n2) / float(BETA_ONE)
        c1, c2 = s.bias_corrections()
        self.c1, self.c2 = per(c1[t]), per(c2[t])
        self.alpha, self.eps = per(s.alphas[t]), per(s.eps)
        self.m_scale = per(2.0 ** state.fmt.m.astype(np.float64))
        self.s_scale = per(2.0 ** state.fmt.s.astype(np.float64))
        self.w_scale = 2.0 ** state.fmt.w
        self.decays = bool(np.any(s.n_decay[t] != BETA_ONE))


def position_increment(M, S, k):
    """``alpha (m / c1) / (sqrt(s / c2) + eps)`` from the fixed-point moments (float64, the
    same operations in the same order in every executor)."""
    m = M / k.m_scale
    s = S / k.s_scale
    with np.errstate(invalid="ignore"):          # a negative s (corrupt state) gives NaN: caught
        return k.alpha * (m / k.c1) / (np.sqrt(s / k.c2) + k.eps)


def numpy_forward_step(state, g, t):
    """One exact Adam step, in place on ``state``: the specification."""
    k = _StepConstants(state, t)
    buf = state.buffer
    M = buf.multiply(state.M, k.n1)
    M = _add(M, _fix(k.one_minus_b1 * g, k.m_scale, M_STEP, t), M_NAME, t)
    S = buf.multiply(state.S, k.n2)
    S = _add(S, _fix(k.one_minus_b2 * (g * g), k.s_scale, S_STEP, t), S_NAME, t)
    if np.any(S < 0):
        raise negative_s_error(t)
    W = buf.multiply(state.W, k.nd) if k.decays else state.W
    D = _fix(position_increment(M, S, k), k.w_scale, W_STEP, t)
    state.W, state.M, state.S = _add(W, D, W_NAME, t, subtract=True), M, S


def numpy_undo_position(state, t):
    k = _StepConstants(state, t)
    D = _fix(position_increment(state.M, state.S, k), k.w_scale, W_STEP, t)
    W = _add(state.W, D, W_NAME, t)
    state.W = state.buffer.divide(W, k.nd) if k.decays else W


def numpy_undo_moments(state, g, t):
    k = _StepConstants(state, t)
    buf = state.buffer
    S = _add(state.S, _fix(k.one_minus_b2 * (g * g), k.s_scale, S_STEP, t), S_NAME, t,
             subtract=True)
    state.S = buf.divide(S, k.n2)
    M = _add(state.M, _fix(k.one_minus_b1 * g, k.m_scale, M_STEP, t), M_NAME, t, subtract=True)
    state.M = buf.divide(M, k.n1)


def step_constants(state, t):
    """Per-group ``(n1, n2, nd)`` rows and the float constants of step ``t`` (``(G, 17)``) that
    the compiled kernels (numba, CUDA) read: ``[2**fm, 2**fs, alpha, c1, c2, eps, 1 - beta1,
    1 - beta2, 2**fw, 2**-fm, 2**-fs, 1 / n1, 1 / n2, 1 / nd, 2 / n1, 2 / n2, 2 / nd]``.
    ``t`` may be a slice of steps: rows ``(steps, G)`` and constants ``(steps, G, 17)``."""
    s, fmt = state.schedule, state.fmt
    c1, c2 = s.bias_corrections()
    consts = np.empty(np.shape(s.alphas[t]) + (17,))
    consts[..., 0] = 2.0 ** fmt.m.astype(np.float64)
    consts[..., 1] = 2.0 ** fmt.s.astype(np.float64)
    consts[..., 2] = s.alphas[t]
    consts[..., 3] = c1[t]
    consts[..., 4] = c2[t]
    consts[..., 5] = s.eps
    consts[..., 6] = (BETA_ONE - s.n[t]) / float(BETA_ONE)
    consts[..., 7] = (BETA_ONE - s.n2[t]) / float(BETA_ONE)
    consts[..., 8] = 2.0 ** fmt.w
    consts[..., 9] = 2.0 ** -fmt.m.astype(np.float64)
    consts[..., 10] = 2.0 ** -fmt.s.astype(np.float64)
    consts[..., 11] = 1.0 / s.n[t]
    consts[..., 12] = 1.0 / s.n2[t]
    consts[..., 13] = 1.0 / s.n_decay[t]
    consts[..., 14] = 2.0 / s.n[t]
    consts[..., 15] = 2.0 / s.n2[t]
    consts[..., 16] = 2.0 / s.n_decay[t]
    rows = [np.ascontiguousarray(r, dtype=np.int64) for r in (s.n[t], s.n2[t], s.n_decay[t])]
    return rows, consts


# ---------------------------------------------------------------------- rule
class AdamRule(trajectory.UpdateRule):
    """Adam / AdamW as an update rule of :mod:`reversible.trajectory`'s engine (kernels:
    :mod:`reversible.adam_kernels`)."""

    name = "adam"
    aux_names = ("m", "s")
    state_kinds = ("w0",)                   # the moments start at zero
    hyper_kinds = ("alphas", "beta1s", "beta2s", "eps", "weight_decay")

    @property
    def kernels(self):
        from . import adam_kernels      # imports this module: loaded on first use
        return adam_kernels

    # ----------------------------------------------------------- exact steps
    def start(self, w0, aux0, frac_bits):
        if aux0 is not None:
            raise ValueError("Adam starts from zero moments; it takes no initial auxiliary state")
        fmt = frac_bits if isinstance(frac_bits, AdamFormat) else AdamFormat.parse(frac_bits, self.schedule.G)
        W = to_fixed(w0, fmt.w, "initial weights w0")
        zeros = np.zeros(w0.size, dtype=np.int64)
        return AdamState(W, zeros, zeros.copy(), InfoBuffer(w0.size), self.schedule, fmt, W.copy())

    def exact_forward(self, state, g, t):
        if state.fmt.m is None or state.fmt.s is None:
            state.fmt.resolve(g, self.schedule)
            state.stats["adam_frac_bits"] = state.fmt.as_dict()
        self.kernel.forward_step(state, g, t)
        return to_float(state.W, state.fmt.w)

    def exact_undo_position(self, state, t):
        self.kernel.undo_position(state, t)

    def exact_undo_aux(self, state, g, t):
        self.kernel.undo_moments(state, g, t)

    def float_aux(self, state):
        return state.m, state.s

    def at_start(self, state):
        return (np.array_equal(state.W, state.W0) and not np.any(state.M) and not np.any(state.S)
                and state.buffer.is_empty())

    # ------------------------------------------------------------ float step
    def float_start(self, problem):
        return problem.w0.copy(), (np.zeros(problem.N), np.zeros(problem.N))

    def float_hyper(self):
        s = self.schedule
        c1, c2 = s.bias_corrections()
        return {"alphas": s.alphas, "beta1s": s.beta1s, "beta2s": s.beta2s, "c1": c1, "c2": c2,
                "eps": s.eps, "decay": s.decay, "weight_decay": s.weight_decay}

    def raw_hyper(self, problem):
        """The hyperparameters as given, by kind (``problem.betas`` holds ``beta1s``)."""
        return {"alphas": problem.alphas, "beta1s": problem.betas, "beta2s": problem.beta2s,
                "eps": problem.eps, "weight_decay": problem.weight_decay}

    def traced_hyper(self, raw):
        return float_hyper(raw["alphas"], raw["beta1s"], raw["beta2s"], raw["eps"],
                           raw["weight_decay"])

    def float_step(self, hyper, t, w, aux, g):
        """One float64 Adam step (``hyper`` from :func:`float_hyper`; autograd boxes allowed)."""
        per = self.schedule.traceable_per_element
        m, s = aux
        b1, b2 = per(hyper["beta1s"][t]), per(hyper["beta2s"][t])
        m = b1 * m + (1.0 - b1) * g
        s = b2 * s + (1.0 - b2) * (g * g)
        step = per(hyper["alphas"][t]) * (m / per(hyper["c1"][t])) / (
            sqrt0(s / per(hyper["c2"][t])) + per(hyper["eps"]))
        return per(hyper["decay"][t]) * w - step, (m, s)

    # --------------------------------------------------------------- adjoint
    def hyper_shapes(self):
        TG = (self.schedule.T, self.schedule.G)
        return {"alphas": TG, "beta1s": TG, "beta2s": TG, "eps": (self.schedule.G,),
                "weight_decay": TG, "c1": TG, "c2": TG}

    def adjoint_step(self, cot, t, w_t, aux_after, derivs, aux_before):
        """Back-propagate ``cot`` through step ``t`` (derivation in ``docs/adam.md``).

        With ``r = sqrt(s'/c2)``, ``D = r + eps``, ``u = (m'/c1) / D`` and
        ``w' = d w - alpha u``::

            u_bar   = -alpha w_bar'
            m_bar' += u_bar / (c1 D)          s_bar' += -u_bar u / (2 c2 r D)   (0 where r = 0)
            d alpha = <w_bar', -u - wd w>     d wd = <w_bar', -alpha w>
            d eps   = <u_bar, -u / D>         d c1 = <u_bar, -u / c1>   d c2 = <u_bar, u r / (2 c2 D)>
            g_bar   = (1 - beta1) m_bar' + 2 (1 - beta2) g s_bar'      (one HVP)
            d beta1 = <m_bar', m - g>         d beta2 = <s_bar', s - g^2>
            w_bar   = d w_bar' + H g_bar      m_bar = beta1 m_bar'      s_bar = beta2 s_bar'

        ``d c1`` and ``d c2`` reach the betas of steps ``<= t`` in :meth:`result`.
        This NumPy code is the specification; a kernel with an ``adjoint`` (numba's,
        :mod:`reversible.adam_adjoint_numba`) does the same in two compiled loops.
        """
        fused = getattr(self.kernel, "adjoint", None)
        if fused is not None and type(cot.w) is np.ndarray:    # host arrays (not CuPy's)
            return self._fused_adjoint_step(fused, cot, t, w_t, aux_after, derivs, aux_before)
        sc = self.schedule
        per, gs, h = sc.per_element, sc.group_sum, cot.hyper
        c1, c2 = sc.bias_corrections()
        alpha, c1, c2 = per(sc.alphas[t]), per(c1[t]), per(c2[t])
        b1, b2 = per(sc.beta1s[t]), per(sc.beta2s[t])
        eps, wd, decay = per(sc.eps), per(sc.weight_decay[t]), per(sc.decay[t])
        m_after, s_after = aux_after
        r = np.sqrt(s_after / c2)
        D = r + eps
        u = (m_after / c1) / D                      # the increment per unit learning rate
        dw = cot.w
        ubar = -alpha * dw
        h["alphas"][t] += gs(-dw * (u + wd * w_t))
        h["weight_decay"][t] += gs(-dw * alpha * w_t)
        h["eps"] += gs(-ubar * u / D)
        h["c1"][t] += gs(-ubar * u / c1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ds_from_u = np.where(r > 0, -ubar * u / (2.0 * c2 * r * D), 0.0)
        h["c2"][t] += gs(ubar * u * r / (2.0 * c2 * D))
        dm = cot.aux[0] + ubar / (c1 * D)
        ds = cot.aux[1] + ds_from_u
        g, hw, hm = derivs(lambda g: (1.0 - b1) * dm + 2.0 * (1.0 - b2) * g * ds)
        m_t, s_t = aux_before(g)
        h["beta1s"][t] += gs(dm * (m_t - g))
        h["beta2s"][t] += gs(ds * (s_t - g * g))
        cot.w = decay * dw + hw
        if cot.meta is not None:
            cot.meta += hm
        cot.aux[0] = b1 * dm
        cot.aux[1] = b2 * ds

    def _fused_adjoint_step(self, fused, cot, t, w_t, aux_after, derivs, aux_before):
        """:meth:`adjoint_step` through a compiled ``fused`` namespace: the same per-element
        terms, summed per group by the same ``group_sum``, so the same bits."""
        sc, h = self.schedule, cot.hyper
        c1, c2 = sc.bias_corrections()
        gi = self._group_index_i64()
        work = getattr(self, "_work", None)
        if work is None or work.shape[1] != cot.w.size:
            work = self._work = np.empty((7, cot.w.size))
        dw, dm, ds = cot.w, cot.aux[0], cot.aux[1]
        fused.before_hvp(dw, dm, ds, aux_after[0], aux_after[1], w_t, gi, sc.alphas[t], c1[t],
                         c2[t], sc.eps, sc.weight_decay[t], work)
        b1, b2 = sc.beta1s[t], sc.beta2s[t]
        g, hw, hm = derivs(lambda g: fused.hvp_vector(dm, ds, g, gi, 1.0 - b1, 1.0 - b2))
        m_t, s_t = aux_before(g)
        fused.after_hvp(dw, dm, ds, m_t, s_t, g, hw, gi, b1, b2, sc.decay[t], work)
        gs = sc.group_sum
        for row, name in enumerate(("alphas", "weight_decay", "eps", "c1", "c2", "beta1s",
                                    "beta2s")):
            if name == "eps":
                h[name] += gs(work[row])
            else:
                h[name][t] += gs(work[row])
        if cot.meta is not None:
            cot.meta += hm

    def _group_index_i64(self):
        gi = getattr(self, "_gi", None)
        if gi is None:
            gi = self._gi = np.ascontiguousarray(self.schedule.group_index, dtype=np.int64)
        return gi

    def result(self, cot, keep_initial=True):
        """Cotangents of ``w0``, ``alphas``, ``beta1s``, ``beta2s``, ``eps`` ``(G,)``,
        ``weight_decay`` and ``meta``, with the bias corrections' share of the betas."""
        sc, h = self.schedule, cot.hyper
        out = {"alphas": h["alphas"].copy(), "eps": h["eps"].copy(),
               "weight_decay": h["weight_decay"].copy(), "meta": cot.meta}
        for name, betas, cbar in (("beta1s", sc.beta1s, h["c1"]), ("beta2s", sc.beta2s, h["c2"])):
            # c_t = 1 - prod_{k<=t} beta_k:  d c_t / d beta_k = -prod_{j<=t} beta_j / beta_k
            prods = np.cumprod(betas, axis=0)
            tail = np.cumsum((cbar * prods)[::-1], axis=0)[::-1]
            out[name] = h[name] - tail / betas
        zero = np.zeros_like(cot.w)
        out["w0"] = cot.w if keep_initial else zero
        out["m0"] = cot.aux[0] if keep_initial else zero.copy()
        out["s0"] = cot.aux[1] if keep_initial else zero.copy()
        return out
