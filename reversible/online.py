"""Online hyperparameter optimisation: parameters and hyperparameters trained together.

:func:`train_online` runs SGD with momentum (the engine's convention,
``v <- b v - (1 - b) g``, ``w <- w + a v``; ``b = 0`` is plain SGD) and,
whenever its estimator returns a hypergradient ``h``, takes the step
``u <- u - hyper_lr * h`` on the unconstrained hyperparameters ``u``:

* ``meta``: the training loss's hyperparameters, passed to the loss as
  ``transform(u_meta)`` ("none", "exp" or "logistic", which keeps them in range);
  entries flagged in ``fd`` (dropout keep-probabilities behind hard masks) get
  their ``d g / d meta`` from a finite difference with coupled masks (the loss
  draws its uniforms from ``t`` alone, so both evaluations share them);
* ``log_lr``: the log learning rate (``tune_lr=True``).

Estimators (:func:`estimator` builds one from a name):

* :class:`Unroll1GtGv` - ``h = -<g_V, d g_T / d u>`` (T1-T2, Luketina et al. 2016);
* :class:`Unroll` (K) - tangent ``Y = d w / d u`` from zero for K steps, then
  ``h = <g_V, Y>`` and reset (Franceschi et al. 2017);
* :class:`Clip` (r) - tangent never reset, each column of ``(Y_w, Y_v)``
  (``Y_w`` alone for plain SGD) projected on the ball of radius r every step;
  ``h`` every step;
* :class:`Adaptive` (every, last) - every ``every`` steps the exact
  hypergradient over the last ``last`` steps, from :func:`reversible.sgd`;
* :class:`HypergradientDescent` - Baydin et al. 2018 for ``log_lr``:
  ``h = a <g(w_{t+1}), v_{t+1}>`` on the next minibatch's training loss.
"""

from collections import deque
from dataclasses import dataclass, field

import autograd.numpy as anp
import numpy as np
from autograd import grad as ag_grad
from autograd import make_jvp

from .buffer import effective_beta
from .errors import NonFiniteError
from .structure import Structure

TRANSFORMS = ("none", "exp", "logistic")


def _forward(transform, u):
    if transform == "exp":
        return anp.exp(u)
    if transform == "logistic":
        return 0.5 * (anp.tanh(0.5 * u) + 1.0)
    return u


def _dforward(transform, u):
    if transform == "exp":
        return np.exp(u)
    if transform == "logistic":
        s = 0.5 * (np.tanh(0.5 * u) + 1.0)
        return s * (1.0 - s)
    return np.ones_like(u)


def inverse_transform(transform, value):
    """``u`` with ``transform(u) == value``: log, logit or identity."""
    value = np.asarray(value, dtype=float)
    if transform == "exp":
        if np.any(value <= 0):
            raise ValueError("an 'exp'-parameterised hyperparameter must start > 0")
        return np.log(value)
    if transform == "logistic":
        if np.any((value <= 0) | (value >= 1)):
            raise ValueError("a 'logistic'-parameterised hyperparameter must start in (0, 1)")
        return np.log(value) - np.log1p(-value)
    return value


# --------------------------------------------------------------------------- problem
class OnlineProblem:
    """Flat-vector view of the user's losses and the derivatives the estimators need."""

    def __init__(self, train_loss, val_loss, w0, meta0, transform, fd, fd_step, tune_meta, tune_lr,
                 beta):
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {TRANSFORMS}; got {transform!r}")
        self.train_loss, self.val_loss = train_loss, val_loss
        self.ws = Structure(w0, "w0")
        self.ms = None if meta0 is None else Structure(meta0, "meta0")
        self.transform = transform
        self.P_meta = 0 if self.ms is None else self.ms.size
        self.tune_meta = bool(tune_meta) and self.P_meta > 0
        self.tune_lr = bool(tune_lr)
        if not (self.tune_meta or self.tune_lr):
            raise ValueError("nothing to tune: give meta0 (and tune_meta=True) or tune_lr=True")
        self.fd = np.zeros(self.P_meta, bool) if fd is None else np.asarray(fd, bool).ravel()
        if self.fd.shape != (self.P_meta,):
            raise ValueError(f"fd must be a boolean mask with one entry per meta element "
                             f"({self.P_meta}); got shape {self.fd.shape}")
        self.fd_step = float(fd_step)
        self.beta = 0.0 if beta == 0 else float(effective_beta(beta))
        self._gw = ag_grad(self._loss, 0)
        self._gv = ag_grad(self._vloss, 0)

    @property
    def P(self):
        return (self.P_meta if self.tune_meta else 0) + (1 if self.tune_lr else 0)

    def meta_value(self, um):
        return None if self.ms is None else _forward(self.transform, um)

    def _loss(self, w, m, t):
        return self.train_loss(self.ws.unflatten(w), None if m is None else self.ms.unflatten(m), t)

    def _vloss(self, w, t):
        return self.val_loss(self.ws.unflatten(w), t)

    def grad(self, w, m, t):
        return np.asarray(self._gw(w, m, t), dtype=float)

    def val_grad(self, w, t):
        return np.asarray(self._gv(w, t), dtype=float)

    def tangent_terms(self, w, um, t, Yw):
        """``(g, D)`` with column j of ``D`` = ``H_ww Y_w[:, j] + d g / d u_j`` (meta columns
        first, then a zero cross term for ``log_lr``)."""
        m = self.meta_value(um)
        N, P = Yw.shape
        D = np.empty((N, P))
        g = None
        for j in range(P):
            meta_col = self.tune_meta and j < self.P_meta
            if meta_col and not self.fd[j]:
                dm = np.zeros(self.P_meta)
                dm[j] = _dforward(self.transform, um[j])
                gj, D[:, j] = make_jvp(lambda z: self._gw(z[:N], z[N:], t))(
                    np.concatenate([w, m]))(np.concatenate([Yw[:, j], dm]))
            else:
                gj, D[:, j] = make_jvp(lambda x: self._gw(x, m, t))(w)(Yw[:, j])
                if meta_col:
                    D[:, j] += self.fd_cross(w, um, t, j, gj)
            g = np.asarray(gj, dtype=float)
        return g, D

    def fd_cross(self, w, um, t, j, g=None):
        """``d g / d u_j`` by a one-sided difference in ``meta_j`` with the same masks
        (backward when a logistic value would leave (0, 1))."""
        m = self.meta_value(um)
        g = self.grad(w, m, t) if g is None else g
        step = self.fd_step
        if self.transform == "logistic" and m[j] + step >= 1.0:
            step = -step
        mp = np.array(m, dtype=float)
        mp[j] += step
        return (self.grad(w, mp, t) - g) / step * _dforward(self.transform, um[j])

    def train(self, w, v, um, log_lr, t0, steps):
        """Plain training with the hyperparameters held fixed: ``(w, v)`` after ``steps``."""
        m, a, b = self.meta_value(um), float(np.exp(log_lr)), self.beta
        for t in range(t0, t0 + steps):
            v = b * v - (1.0 - b) * self.grad(w, m, t)
            w = w + a * v
        return w, v

    def cross(self, w, um, t):
        """``d g_T / d u`` (N, P), columns as in :meth:`tangent_terms` (the ``log_lr`` one zero)."""
        return self.tangent_terms(w, um, t, np.zeros((w.size, self.P)))[1]


@dataclass
class StepInfo:
    """What an estimator sees after training step ``t`` (``w, v`` before it, ``w1, v1`` after)."""

    t: int
    w: np.ndarray
    v: np.ndarray
    w1: np.ndarray
    v1: np.ndarray
    um: np.ndarray
    log_lr: float
    lr: float
    beta: float


# --------------------------------------------------------------------------- estimators
class Estimator:
    """Base class: ``observe(problem, info)`` returns a hypergradient (P,) or None."""

    tangent = False
    name = "estimator"

    def start(self, problem, N):
        pass

    def before_step(self, problem, w, um, t):
        """Gradient for step ``t`` (tangent estimators also prepare ``D`` here)."""
        return problem.grad(w, problem.meta_value(um), t)

    def observe(self, problem, info):
        raise NotImplementedError


class Unroll1GtGv(Estimator):
    """``h = -<g_V(w_{t+1}), d g_T(w_t) / d u>``: one step, no learning-rate factor."""

    name = "unroll1_gtgv"

    def start(self, problem, N):
        if problem.tune_lr:
            raise ValueError("unroll1_gtgv cannot tune the learning rate (d g_T / d lr = 0); "
                             "use unroll(K), clip(r), adaptive or hd for log_lr")

    def before_step(self, problem, w, um, t):
        g, self._D = problem.tangent_terms(w, um, t, np.zeros((w.size, problem.P)))
        return g

    def observe(self, problem, info):
        return -(problem.val_grad(info.w1, info.t) @ self._D)


class _Tangent(Estimator):
    """Forward-mode tangent ``(Y_w, Y_v) = d (w, v) / d u`` propagated with the step."""

    tangent = True

    def start(self, problem, N):
        self.Yw = np.zeros((N, problem.P))
        self.Yv = np.zeros((N, problem.P))

    def before_step(self, problem, w, um, t):
        g, self._D = problem.tangent_terms(w, um, t, self.Yw)
        return g

    def propagate(self, problem, info):
        b, a = info.beta, info.lr
        self.Yv = b * self.Yv - (1.0 - b) * self._D
        self.Yw = self.Yw + a * self.Yv
        if problem.tune_lr:
            self.Yw[:, -1] += a * info.v1

    def reset(self):
        self.Yw[:] = 0.0
        self.Yv[:] = 0.0


class Unroll(_Tangent):
    """K-step hypergradient: tangent from zero over K steps, ``h = <g_V, Y_w>``, reset."""

    def __init__(self, K):
        if int(K) != K or K < 1:
            raise ValueError(f"unroll needs an integer K >= 1; got {K!r}")
        self.K, self.name, self._n = int(K), f"unroll{int(K)}", 0

    def observe(self, problem, info):
        self.propagate(problem, info)
        self._n += 1
        if self._n % self.K:
            return None
        h = problem.val_grad(info.w1, info.t) @ self.Yw
        self.reset()
        return h


class Clip(_Tangent):
    """Tangent never reset; each column of ``(Y_w, Y_v)`` projected on the ball of radius r."""

    def __init__(self, r):
        if not r > 0:
            raise ValueError(f"clip needs a radius r > 0; got {r!r}")
        self.r, self.name = float(r), f"clip{r:g}"

    def observe(self, problem, info):
        self.propagate(problem, info)
        sq = np.sum(self.Yw ** 2, axis=0)
        if info.beta > 0:                   # with beta = 0, v holds no state: clip Y_w alone
            sq = sq + np.sum(self.Yv ** 2, axis=0)
        norm = np.sqrt(sq)
        scale = np.where(norm > self.r, self.r / np.where(norm > self.r, norm, 1.0), 1.0)
        self.Yw *= scale
        self.Yv *= scale
        return problem.val_grad(info.w1, info.t) @ self.Yw


class Adaptive(Estimator):
    """Every ``every`` steps, the exact hypergradient of ``L_V(w_{t+1}, t)`` over the last
    ``last`` steps, replayed by :func:`reversible.sgd` from the stored ``(w, v)`` with
    the current hyperparameters (DrMAD thesis, adaptive method)."""

    def __init__(self, every, last=None, method="exact", **sgd_options):
        last = every if last is None else last
        if int(every) != every or every < 1 or int(last) != last or last < 1:
            raise ValueError(f"adaptive needs integers every >= 1 and last >= 1; got {every!r}, {last!r}")
        self.every, self.last, self.method = int(every), int(last), method
        self.sgd_options = sgd_options
        self.name = f"adaptive{self.every}_{self.last}"

    def start(self, problem, N):
        if problem.beta == 0:
            raise ValueError("adaptive replays windows with reversible.sgd, which needs momentum "
                             "beta in (0, 1]; use beta >= 2**-32 (e.g. 0.5)")
        if problem.tune_meta and problem.fd.any():
            raise ValueError("adaptive differentiates the loss with autograd and cannot see "
                             "finite-difference (dropout) hyperparameters; use unroll or clip")
        self._snaps = deque(maxlen=self.last)     # states before the last `last` steps
        self._n = 0

    def observe(self, problem, info):
        self._snaps.append((info.t, info.w, info.v))
        self._n += 1
        if self._n % self.every or len(self._snaps) < self.last:
            return None
        t0, w0, v0 = self._snaps[0]
        return window_hypergradient(problem, w0, v0, info.um, info.log_lr, t0, info.t + 1 - t0,
                                    method=self.method, **self.sgd_options)


class HypergradientDescent(Estimator):
    """Baydin et al. 2018 on ``log_lr``: ``h = a <g(w_{t+1}, t + 1), v_{t+1}>`` (training
    loss; ``objective="val"`` uses ``g_V(w_{t+1}, t)`` instead, which is ``unroll1``)."""

    def __init__(self, objective="train"):
        if objective not in ("train", "val"):
            raise ValueError(f"hd objective must be 'train' or 'val'; got {objective!r}")
        self.objective, self.name = objective, "hd" if objective == "train" else "hd_val"

    def start(self, problem, N):
        if problem.tune_meta or not problem.tune_lr:
            raise ValueError("hd tunes only the learning rate: use tune_lr=True and tune_meta=False")

    def observe(self, problem, info):
        if self.objective == "train":
            gn = problem.grad(info.w1, problem.meta_value(info.um), info.t + 1)
        else:
            gn = problem.val_grad(info.w1, info.t)
        return np.array([info.lr * (gn @ info.v1)])


class TruncatedES(Estimator):
    """Truncated antithetic ES: every ``K`` steps, ``particles`` copies of the current state
    run ``K`` steps at ``u +- sigma eps`` and ``h = sum (L_i(+) - L_i(-)) / 2 eps_i / (sigma n)``
    with ``L`` the validation loss after the truncation; the copies then restart from the
    current state.  Biased (blind to effects beyond ``K`` steps), like ``unroll<K>``."""

    persistent = False

    def __init__(self, K, sigma, particles=16, seed=0):
        from .methods.es import check_particles, check_seed, check_sigma
        if isinstance(K, bool) or int(K) != K or K < 1:
            raise ValueError(f"{type(self).__name__} needs an integer K >= 1; got {K!r}")
        self.K, self.sigma = int(K), check_sigma(sigma, type(self).__name__)
        self.particles = check_particles(particles, type(self).__name__)
        self.seed = check_seed(seed, type(self).__name__)
        self.name = f"{'pes' if self.persistent else 'tes'}{self.K}"

    def start(self, problem, N):
        self._rng = np.random.default_rng(self.seed)
        self._W = None
        self._n = 0

    def _perturbed(self, problem, um, log_lr, d):
        """``(meta, lr)`` of a particle at ``u + d`` (``d`` on the tuned columns)."""
        if problem.tune_meta:
            um = um + d[:problem.P_meta]
        if problem.tune_lr:
            log_lr = log_lr + d[-1]
        return problem.meta_value(um), float(np.exp(log_lr))

    def _begin(self, info):
        n = self.particles // 2
        self._eps = self._rng.standard_normal((n, self._P))
        if self._W is None or not self.persistent:
            self._W = np.tile(info.w, (2 * n, 1))
            self._V = np.tile(info.v, (2 * n, 1))
            self._xi = np.zeros_like(self._eps)
        self._xi = self._xi + self._eps

    def observe(self, problem, info):
        self._P = problem.P
        n = self.particles // 2
        if self._n % self.K == 0:
            self._begin(info)
        b = info.beta
        for i in range(2 * n):
            d = self.sigma * (self._eps[i] if i < n else -self._eps[i - n])
            meta, lr = self._perturbed(problem, info.um, info.log_lr, d)
            g = problem.grad(self._W[i], meta, info.t)
            self._V[i] = b * self._V[i] - (1.0 - b) * g
            self._W[i] = self._W[i] + lr * self._V[i]
        self._n += 1
        if self._n % self.K:
            return None
        L = np.array([problem.val_loss(problem.ws.unflatten(w), info.t) for w in self._W],
                     dtype=float)
        if not np.all(np.isfinite(L)):
            raise NonFiniteError(f"step {info.t}: {'PES' if self.persistent else 'truncated ES'}"
                                 f" particle {int(np.flatnonzero(~np.isfinite(L))[0])} has a NaN "
                                 "or Inf validation loss; lower sigma or lr")
        half = 0.5 * (L[:n] - L[n:])
        return half @ self._xi / (self.sigma * n)


class PersistentES(TruncatedES):
    """PES (Vicol, Metz & Sohl-Dickstein 2021) online: like :class:`TruncatedES`, but the
    particles keep their own states across truncations and each antithetic pair accumulates
    its perturbations ``xi = sum_j eps_j``; ``h = sum (L_i(+) - L_i(-)) / 2 xi_i / (sigma n)``
    removes the truncation bias (unbiased for the smoothed loss while ``u`` is held fixed)."""

    persistent = True


def estimator(name, **kw):
    """An estimator from a name: ``unroll1_gtgv``, ``unroll<K>``, ``clip<r>``,
    ``adaptive<every>_<last>``, ``hd``, ``hd_val`` (extra ``kw`` go to the constructor)."""
    if isinstance(name, Estimator):
        return name
    try:
        if name == "unroll1_gtgv":
            return Unroll1GtGv()
        if name in ("hd", "hd_val"):
            return HypergradientDescent("train" if name == "hd" else "val")
        if name.startswith("unroll"):
            return Unroll(int(name[6:]))
        if name.startswith("clip"):
            return Clip(float(name[4:]))
        if name.startswith("adaptive"):
            every, _, last = name[8:].partition("_")
            return Adaptive(int(every), int(last) if last else None, **kw)
    except ValueError as err:
        if "needs" in str(err):
            raise
    raise ValueError(f"unknown estimator {name!r}; use unroll1_gtgv, unroll<K>, clip<r>, "
                     "adaptive<every>_<last>, hd or hd_val")


# --------------------------------------------------------------------------- exact window
def window_hypergradient(problem, w0, v0, um, log_lr, t0, steps, method="exact", **sgd_options):
    """Exact ``d L_V(w_{t0+steps}, t0+steps-1) / d u`` over ``steps`` steps from ``(w0, v0)``
    with the hyperparameters held at ``(um, log_lr)`` (columns as the online ``u``)."""
    from autograd import grad

    from .api import sgd

    if problem.beta == 0:
        raise ValueError("the exact engine needs momentum beta in (0, 1]")

    def loss_t(w, m, t):
        return problem.train_loss(w, m, t + t0)

    wst = problem.ws

    def objective(x):
        um_, llr = (x[:-1], x[-1]) if problem.tune_lr else (x, log_lr)
        um_ = um_ if problem.tune_meta else um
        meta = None if problem.ms is None else problem.ms.unflatten(problem.meta_value(um_))
        wT = sgd(loss_t, wst.unflatten(w0), anp.exp(llr) * anp.ones(steps),
                 np.full(steps, problem.beta), meta, v0=wst.unflatten(v0), method=method,
                 **sgd_options)
        return problem.val_loss(wT, t0 + steps - 1)

    x0 = np.concatenate([np.asarray(um, float) if problem.tune_meta else np.zeros(0),
                         [log_lr] if problem.tune_lr else []])
    return np.asarray(grad(objective)(x0), dtype=float)


# --------------------------------------------------------------------------- loop
@dataclass
class OnlineResult:
    """Final state and the recorded history (arrays, one row per recorded step)."""

    w: object
    v: np.ndarray
    u: np.ndarray
    meta: object
    lr: float
    history: dict = field(default_factory=dict)

    def to_json(self):
        """History as JSON-ready lists."""
        return {k: np.asarray(v).tolist() for k, v in self.history.items()}


def train_online(train_loss, val_loss, w0, meta0, T, estimator_name, *, lr, beta=0.0,
                 hyper_lr, transform="none", tune_meta=True, tune_lr=False, fd=None,
                 fd_step=1e-2, warmup=0, hyper_clip=None, hyper_rms=None, v0=None, t0=0,
                 record_every=0, record=None):
    """Train ``w`` for ``T`` steps while tuning the hyperparameters online.

    ``train_loss(w, meta, t)`` and ``val_loss(w, t)`` are autograd scalars
    (``w`` structured like ``w0``, ``meta`` like ``meta0``); ``meta0`` is given
    in the *constrained* space (e.g. the L2 weight itself for
    ``transform="exp"``).  ``estimator_name``: a name (see :func:`estimator`)
    or an :class:`Estimator`.  ``hyper_lr``: step size on the unconstrained
    ``u`` (a float, or one per column).  ``warmup``: no hyper steps before it;
    ``hyper_clip``: each component of a hyper step is clipped to
    ``[-hyper_clip, hyper_clip]``; ``hyper_rms`` (a decay rho in [0, 1)) divides
    each step by the running RMS of ``h`` (RMSprop: the step no longer depends on
    the scale of the estimate).  ``record(w, meta, lr, t)`` -> dict of floats
    is called every ``record_every`` steps.  Raises :class:`NonFiniteError` on
    a non-finite hypergradient.
    """
    if T < 1 or int(T) != T:
        raise ValueError(f"T must be a positive integer; got {T!r}")
    if lr <= 0:
        raise ValueError(f"lr must be > 0; got {lr!r}")
    if hyper_rms is not None and not 0 <= hyper_rms < 1:
        raise ValueError(f"hyper_rms must be None or a decay in [0, 1); got {hyper_rms!r}")
    if not 0 <= beta < 1:
        raise ValueError(f"beta must lie in [0, 1); got {beta!r}")
    prob = OnlineProblem(train_loss, val_loss, w0, meta0, transform, fd, fd_step, tune_meta,
                         tune_lr, beta)
    est = estimator(estimator_name)
    w = prob.ws.flatten(w0)
    w = np.array(w, dtype=float)
    v = np.zeros_like(w) if v0 is None else np.array(prob.ws.flatten(v0), dtype=float)
    um = np.zeros(0) if prob.ms is None else inverse_transform(transform, prob.ms.flatten(meta0))
    log_lr = float(np.log(lr))
    hyper_lr = np.broadcast_to(np.asarray(hyper_lr, float), (prob.P,))
    est.start(prob, w.size)
    hist = {"t": [], "u": [], "h": [], "n_updates": []}
    extra = {}
    h_last = np.full(prob.P, np.nan)
    n_upd = 0
    ms = None
    for t in range(t0, t0 + T):
        a, b = np.exp(log_lr), prob.beta
        g = est.before_step(prob, w, um, t)
        if not np.all(np.isfinite(g)):
            raise NonFiniteError(f"step {t}: the training gradient is not finite; lower lr")
        v1 = b * v - (1.0 - b) * g
        w1 = w + a * v1
        h = est.observe(prob, StepInfo(t, w, v, w1, v1, um, log_lr, a, b))
        w, v = w1, v1
        if h is not None:
            h = np.asarray(h, dtype=float)
            if not np.all(np.isfinite(h)):
                raise NonFiniteError(f"step {t}: {est.name} returned a non-finite hypergradient "
                                     f"{h}; lower hyper_lr or lr, or add hyper_clip")
            h_last = h
            if t - t0 >= warmup:
                step = hyper_lr * h
                if hyper_rms is not None:
                    ms = h * h if ms is None else hyper_rms * ms + (1 - hyper_rms) * h * h
                    step = step / (np.sqrt(ms) + 1e-30)
                if hyper_clip is not None:
                    step = np.clip(step, -hyper_clip, hyper_clip)
                if prob.tune_meta:
                    um = um - step[:prob.P_meta]
                if prob.tune_lr:
                    log_lr -= step[-1]
                n_upd += 1
        if record_every and ((t - t0 + 1) % record_every == 0 or t == t0 + T - 1):
            hist["t"].append(t + 1)
            hist["u"].append(np.concatenate([um, [log_lr]]))
            hist["h"].append(h_last.copy())
            hist["n_updates"].append(n_upd)
            if record is not None:
                m = prob.meta_value(um)
                for k, val in record(prob.ws.unflatten(w), None if m is None else
                                     prob.ms.unflatten(m), np.exp(log_lr), t + 1).items():
                    extra.setdefault(k, []).append(float(val))
    hist.update(extra)
    m = prob.meta_value(um)
    return OnlineResult(prob.ws.unflatten(w), v, np.concatenate([um, [log_lr]]),
                        None if m is None else prob.ms.unflatten(m), float(np.exp(log_lr)),
                        {k: np.asarray(val) for k, val in hist.items()})
