"""``reversible.adam``: Adam / AdamW as an autograd primitive whose VJP is a hypergradient method.

The update rule is :mod:`reversible.adam_rule`'s; training, the exact reverse
pass and the float methods are the engine's (:mod:`reversible.trajectory`,
:mod:`reversible.methods`), shared with :func:`reversible.sgd`.
"""

import time
from dataclasses import dataclass

import autograd.numpy as anp
import numpy as np
from autograd import make_vjp
from autograd.tracer import getval

from . import inputs, methods, validate
from .adam_rule import AdamFormat, AdamSchedule
from .methods.checkpointed import problem_rule
from .methods.unrolled import unroll
from .primitive import MethodCall, training_primitive
from .problem import Problem

ADAM_METHODS = ("exact", "unrolled", "checkpointed", "truncated", "drmad", "forward", "es", "pes")
#: Adam's hyperparameters, in argument order
HYPERPARAMETERS = ("alphas", "beta1s", "beta2s", "eps", "weight_decay")
_adam_flat = training_primitive(("w0",) + HYPERPARAMETERS + ("meta",))


@dataclass
class AdamProblem(Problem):
    """A :class:`~reversible.problem.Problem` trained by Adam (``betas`` holds ``beta1s``)."""

    beta2s: np.ndarray = None    # (T, G)
    eps: np.ndarray = None       # (G,)
    weight_decay: np.ndarray = None  # (T, G)

    def grad_then_hvp(self, w, meta, t, vector):
        """``(g, H_ww u, H_meta,w u)`` with ``u = vector(g)``: one taped gradient and one
        backward pass through it (reverse over reverse), as Adam's adjoint needs ``g`` to
        build the vector of its Hessian product."""
        if meta is None:
            back, g = make_vjp(lambda x: self._grad(x, None, t))(w)
            return np.asarray(g), np.asarray(back(vector(np.asarray(g)))), None
        back, g = make_vjp(lambda x, m: self._grad(x, m, t), argnum=(0, 1))(w, meta)
        hw, hm = back(vector(np.asarray(g)))
        return np.asarray(g), np.asarray(hw), np.asarray(hm)

    def schedule(self):
        return AdamSchedule.build(self.alphas, self.betas, self.beta2s, self.group_index, self.G,
                                  self.eps, self.weight_decay)


def adam(train_loss, w0, alphas, beta1s, beta2s, meta=None, *, eps=1e-8, weight_decay=0.0,
         method="exact", frac_bits=None, stats=None, kernel="auto", progress=False, hvp="auto",
         **options):
    """Train ``w0`` for ``T = len(alphas)`` steps of Adam (AdamW with ``weight_decay``); return ``w_T``.

    PyTorch's semantics: ``m <- beta1 m + (1 - beta1) g``,
    ``s <- beta2 s + (1 - beta2) g^2``, ``w <- (1 - alpha wd) w - alpha (m / c1) /
    (sqrt(s / c2) + eps)`` with ``c = 1 - prod(beta so far)``.  Containers,
    groups and schedules as in :func:`reversible.sgd`: ``alphas``, ``beta1s``
    and ``beta2s`` have shape ``(T,)`` or ``(T, G)``; ``eps`` is a positive
    scalar or one per group; ``weight_decay`` a scalar, one per group or a
    ``(T, G)`` schedule.  Betas and the decay factor ``1 - alpha wd`` are
    applied as :func:`reversible.effective_beta` of their value by every method.

    ``autograd.grad`` of any function of ``w_T`` gives hypergradients with
    respect to ``w0``, ``alphas``, ``beta1s``, ``beta2s``, ``eps``,
    ``weight_decay`` and ``meta``: exact with ``method="exact"`` (O(N)
    memory), the float64 reference with ``"unrolled"``, or approximate with
    ``"checkpointed"``, ``"truncated"``, ``"drmad"`` or ``"forward"``.
    ``frac_bits`` is the weights' (int) or a dict ``{"w", "m", "s"}`` giving
    the moments' formats too (see :mod:`reversible.adam_rule`).  Arguments are
    checked by :mod:`reversible.inputs` / :mod:`reversible.validate`, as for ``sgd``.
    """
    if method not in ADAM_METHODS:
        raise ValueError(f"method {method!r} does not support Adam; choose one of "
                         f"{list(ADAM_METHODS)}")
    m = methods.get(method)
    methods.check_options(m.name, options, m.option_names())
    inp = adam_inputs(train_loss, w0, alphas, beta1s, beta2s, meta, eps=eps,
                      weight_decay=weight_decay, frac_bits=frac_bits, kernel=kernel,
                      progress=progress, hvp=hvp, stats=stats)
    problem, params, hyper, stats = inp.problem, inp.params, inp.hyper, inp.stats
    G = params.num_groups
    stats.update(method=method, rule="adam", T=problem.T, N=problem.N, groups=G,
                 blind_to=list(m.blind_to))
    if m.traced:
        t0 = time.perf_counter()
        rule = problem_rule(problem)
        traced = rule.traced_hyper(hyper)
        N = problem.N
        w_T = unroll(rule, problem.loss, params.w0, (np.zeros(N), np.zeros(N)), traced,
                     params.meta, problem.T)
        stats["forward_seconds"] = time.perf_counter() - t0
    else:
        w_T = _adam_flat(params.w0, *(hyper[k] for k in HYPERPARAMETERS), params.meta,
                         MethodCall(m, problem, options, stats))
    return params.unflatten(w_T)


@dataclass
class AdamInputs:
    """Everything :func:`adam` (and :func:`reversible.checkpoint.train_adam`) needs after
    validation: flat parameters, the hyperparameters by kind (``(T, G)``, ``eps`` ``(G,)``;
    autograd boxes when the caller's were), the :class:`AdamProblem` and ``stats``."""

    params: inputs.Parameters
    hyper: dict
    problem: AdamProblem
    stats: dict


def hyperparameters(alphas, beta1s, beta2s, eps, weight_decay, G):
    """Adam's hyperparameters as given, checked and expanded to ``(T, G)`` (``eps``: ``(G,)``),
    staying differentiable; a dict by kind in :data:`HYPERPARAMETERS` order."""
    alphas2 = inputs.schedule(alphas, G, "alphas", 0.0, low_open=True, hint=inputs.ALPHA_HINT)
    b1 = inputs.momentum_schedule(beta1s, G, "beta1s")
    b2 = inputs.momentum_schedule(beta2s, G, "beta2s")
    T = inputs.same_steps(alphas=alphas2, beta1s=b1, beta2s=b2)
    return {"alphas": alphas2, "beta1s": b1, "beta2s": b2, "eps": _per_group(eps, G, "eps"),
            "weight_decay": _decay_rows(weight_decay, G, T)}


def adam_inputs(train_loss, w0, alphas, beta1s, beta2s, meta=None, *, eps=1e-8,
                weight_decay=0.0, frac_bits=None, kernel="auto", progress=False, hvp="auto",
                stats=None):
    """Validate the arguments of :func:`adam` (but the method's) and build its problem."""
    validate.function(train_loss, "train_loss", " train_loss(w, meta, t) -> scalar")
    stats = validate.stats_dict(stats)
    params = inputs.parameters(w0, meta)
    G = params.num_groups
    hyper = hyperparameters(alphas, beta1s, beta2s, eps, weight_decay, G)
    if not isinstance(kernel, str):
        raise TypeError(f"kernel must be a kernel name (a str); got {kernel!r}")
    progress = validate.flag(progress, "progress")
    validate.choice(hvp, "hvp", inputs.HVP_MODES)
    AdamFormat.parse(frac_bits, G)          # validates before any training

    def plain(x):
        return np.array(getval(x), dtype=np.float64)

    problem = AdamProblem.from_containers(
        train_loss, params.structure, params.meta_structure, w0=plain(params.w0), v0=None,
        alphas=plain(hyper["alphas"]), betas=plain(hyper["beta1s"]),
        meta=None if params.meta is None else plain(params.meta), frac_bits=frac_bits,
        kernel=kernel, progress=progress, hvp=hvp, beta2s=plain(hyper["beta2s"]),
        eps=plain(hyper["eps"]), weight_decay=plain(hyper["weight_decay"]))
    problem.schedule()                      # validates the schedules before any training
    return AdamInputs(params, hyper, problem, stats)


def _per_group(x, G, name):
    """A positive scalar or one value per group as a differentiable ``(G,)`` array."""
    val = inputs.per_group_values(x, G, name)
    return x * anp.ones(G) if val.ndim == 0 else x * 1.0


def _decay_rows(x, G, T):
    """AdamW's decay (scalar, per group or ``(T, G)``, each >= 0) as a differentiable ``(T, G)``."""
    val = inputs.decay_values(x, G, T)
    if val.shape == (T, G):
        return x * 1.0
    return anp.ones((T, 1)) * anp.reshape(x * anp.ones(G), (1, G))
