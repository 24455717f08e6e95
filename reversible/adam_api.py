"""``reversible.adam``: Adam / AdamW as an autograd primitive whose VJP is a hypergradient method.

The update rule is :mod:`reversible.adam_rule`'s; training, the exact reverse
pass and the float methods are the engine's (:mod:`reversible.trajectory`,
:mod:`reversible.methods`), shared with :func:`reversible.sgd`.
"""

import time
from dataclasses import dataclass

import autograd.numpy as anp
import numpy as np
from autograd.extend import defvjp_argnums, primitive
from autograd.tracer import getval

from . import methods
from .adam_rule import AdamFormat, AdamSchedule
from .methods.checkpointed import problem_rule
from .methods.unrolled import unroll
from .problem import Problem
from .structure import Structure

ADAM_METHODS = ("exact", "unrolled", "checkpointed", "truncated", "drmad", "forward")
_ARG_NAMES = ("w0", "alphas", "beta1s", "beta2s", "eps", "weight_decay", "meta")


@dataclass
class AdamProblem(Problem):
    """A :class:`~reversible.problem.Problem` trained by Adam (``betas`` holds ``beta1s``)."""

    beta2s: np.ndarray = None    # (T, G)
    eps: np.ndarray = None       # (G,)
    weight_decay: np.ndarray = None  # (T, G)

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
    the moments' formats too (see :mod:`reversible.adam_rule`).
    """
    if method not in ADAM_METHODS:
        raise ValueError(f"method {method!r} does not support Adam; choose one of "
                         f"{list(ADAM_METHODS)}")
    m = methods.get(method)
    if not m.traced:
        _check_options(m, options)
    elif options:
        raise ValueError(f"method {method!r} does not take option(s) {sorted(options)}")
    structure = Structure(w0, "w0")
    G = structure.num_groups
    w0_flat = structure.flatten(w0)
    alphas2 = _rows(alphas, G, "alphas")
    T = anp.shape(alphas2)[0]
    b1 = _rows(beta1s, G, "beta1s", T)
    b2 = _rows(beta2s, G, "beta2s", T)
    eps_g = _per_group(eps, G, "eps")
    wd2 = _decay_rows(weight_decay, G, T)
    if meta is not None:
        meta_structure = Structure(meta, "meta")
        meta_flat = meta_structure.flatten(meta)
    else:
        meta_structure, meta_flat = None, None
    if hvp not in ("auto", "forward", "reverse"):
        raise ValueError(f"hvp must be 'auto', 'forward' or 'reverse'; got {hvp!r}")
    AdamFormat.parse(frac_bits, G)          # validates before any training

    def loss_flat(w, m_flat, t):
        mm = None if meta_structure is None else meta_structure.unflatten(m_flat)
        return train_loss(structure.unflatten(w), mm, t)

    def plain(x):
        return np.array(getval(x), dtype=np.float64)

    problem = AdamProblem(loss_flat, plain(w0_flat), None, plain(alphas2), plain(b1),
                          None if meta_flat is None else plain(meta_flat),
                          structure.group_index(), frac_bits, kernel, progress, hvp,
                          beta2s=plain(b2), eps=plain(eps_g), weight_decay=plain(wd2))
    problem.schedule()                      # validates the schedules before any training
    stats = {} if stats is None else stats
    stats.update(method=method, rule="adam", T=problem.T, N=problem.N, groups=G,
                 blind_to=list(m.blind_to))
    if m.traced:
        t0 = time.perf_counter()
        rule = problem_rule(problem)
        hyper = rule.traced_hyper({"alphas": alphas2, "beta1s": b1, "beta2s": b2, "eps": eps_g,
                                   "weight_decay": wd2})
        N = problem.N
        w_T = unroll(rule, loss_flat, w0_flat, (np.zeros(N), np.zeros(N)),
                     hyper, meta_flat, problem.T)
        stats["forward_seconds"] = time.perf_counter() - t0
    else:
        w_T = _adam_flat(w0_flat, alphas2, b1, b2, eps_g, wd2, meta_flat,
                         _Context(m, problem, options, stats))
    return structure.unflatten(w_T)


class _Context:
    def __init__(self, method, problem, options, stats):
        self.method, self.problem, self.options, self.stats = method, problem, options, stats
        self.backward = None


@primitive
def _adam_flat(w0, alphas, beta1s, beta2s, eps, weight_decay, meta, ctx):
    w_T, ctx.backward = ctx.method.run(ctx.problem, ctx.stats, **ctx.options)
    return np.asarray(w_T, dtype=np.float64)


def _adam_vjp_maker(argnums, ans, args, kwargs):
    ctx = args[7]
    wanted = [_ARG_NAMES[i] for i in argnums]

    def vjp(g):
        cot = ctx.backward(np.asarray(g, dtype=np.float64))
        return tuple(np.zeros(np.shape(args[i])) if cot.get(name) is None
                     else np.reshape(cot[name], np.shape(args[i]))
                     for name, i in zip(wanted, argnums))

    return vjp


defvjp_argnums(_adam_flat, _adam_vjp_maker)


def _check_options(method, options):
    import inspect
    params = inspect.signature(method.run).parameters
    allowed = [name for name in params if name not in ("problem", "stats")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"method {method.name!r} does not take option(s) {unknown}; "
                         f"its options are {allowed or 'none'}")


def _numeric(x, name):
    val = np.asarray(getval(x))
    if not np.issubdtype(val.dtype, np.number) or np.iscomplexobj(val):
        raise ValueError(f"{name} must be a real float array; got dtype {val.dtype}")
    if not np.all(np.isfinite(val)):
        raise ValueError(f"{name} contains NaN or Inf")
    return val


def _rows(x, G, name, T=None):
    """A ``(T,)`` or ``(T, G)`` schedule as a differentiable ``(T, G)`` array."""
    val = _numeric(x, name)
    if val.ndim == 1 and val.shape[0] >= 1:
        out = anp.reshape(x, (-1, 1)) * anp.ones((1, G))
    elif val.ndim == 2 and val.shape[1] == G and val.shape[0] >= 1:
        out = x * 1.0
    else:
        raise ValueError(f"{name} must have shape (T,) or (T, {G}) for {G} parameter group(s) "
                         f"with T >= 1; got {val.shape}")
    if T is not None and anp.shape(out)[0] != T:
        raise ValueError(f"alphas has {T} steps but {name} has {anp.shape(out)[0]}; give every "
                         "schedule one row per training step")
    return out


def _per_group(x, G, name):
    val = _numeric(x, name)
    if val.ndim == 0:
        return x * anp.ones(G)
    if val.shape == (G,):
        return x * 1.0
    raise ValueError(f"{name} must be a scalar or one value per group ({G},); got {val.shape}")


def _decay_rows(x, G, T):
    val = _numeric(x, "weight_decay")
    if val.ndim == 0 or val.shape == (G,):
        return anp.ones((T, 1)) * anp.reshape(x * anp.ones(G), (1, G))
    if val.shape == (T, G):
        return x * 1.0
    raise ValueError(f"weight_decay must be a scalar, one per group ({G},) or a schedule "
                     f"({T}, {G}); got {val.shape}")
