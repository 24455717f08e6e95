"""``reversible.sgd``: SGD with momentum as an autograd primitive whose VJP is a hypergradient method."""

import inspect
import time

import autograd.numpy as anp
import numpy as np
from autograd.extend import defvjp_argnums, primitive
from autograd.tracer import getval

from . import methods
from .buffer import quantize_beta
from .fixedpoint import DEFAULT_FRAC_BITS, check_frac_bits
from .problem import Problem
from .structure import Structure

_ARG_NAMES = ("w0", "v0", "alphas", "betas", "meta")


def sgd(train_loss, w0, alphas, betas, meta=None, *, v0=None, method="exact", frac_bits=None,
        stats=None, kernel="auto", progress=False, hvp="auto", **options):
    """Train ``w0`` for ``T = len(alphas)`` steps of SGD with momentum; return ``w_T``.

    ``train_loss(w, meta, t)`` is a scalar written with ``autograd.numpy``; it
    must draw its minibatch deterministically from the step index ``t``.
    ``w0`` is a float array or a list / tuple / dict of float arrays (one
    parameter group per array); ``w_T`` has the same structure.  ``alphas``
    and ``betas`` have shape ``(T,)`` (shared) or ``(T, G)`` (per group).
    Update rule: ``v <- beta v - (1 - beta) g``, ``w <- w + alpha v``.

    ``autograd.grad`` of any function of ``w_T`` gives hypergradients with
    respect to ``w0``, ``v0``, ``alphas``, ``betas`` and ``meta`` computed by
    ``method``: ``"exact"`` (reversible fixed point, O(N) memory) or
    ``"unrolled"`` (autograd through the float64 loop, O(T N) memory), or an
    approximate method from :mod:`reversible.methods`.  Momenta are applied as
    ``round(beta * 2**32) / 2**32`` by every method.

    ``stats``, if a dict, is filled with timings and information-buffer
    figures (``buffer_bits``, ``bits_per_element_step``,
    ``ideal_bits_per_element_step``, ``reversed_exactly``, ...).
    """
    m = methods.get(method)
    _check_options(m, options)
    structure = Structure(w0, "w0")
    G = structure.num_groups
    w0_flat = structure.flatten(w0)
    v0_flat = anp.zeros(structure.size) if v0 is None else _flatten_like(structure, v0)
    alphas2 = _schedule(alphas, G, "alphas")
    betas2 = _schedule(betas, G, "betas")
    if anp.shape(alphas2)[0] != anp.shape(betas2)[0]:
        raise ValueError(f"alphas has {anp.shape(alphas2)[0]} steps but betas has "
                         f"{anp.shape(betas2)[0]}; give both one row per training step")
    quantize_beta(getval(betas2))                   # validates beta in (0, 1]
    if meta is not None:
        meta_structure = Structure(meta, "meta")
        meta_flat = meta_structure.flatten(meta)
    else:
        meta_structure, meta_flat = None, None
    frac_bits = check_frac_bits(DEFAULT_FRAC_BITS if frac_bits is None else frac_bits)
    if hvp not in ("auto", "forward", "reverse"):
        raise ValueError(f"hvp must be 'auto', 'forward' or 'reverse'; got {hvp!r}")

    def loss_flat(w, m_flat, t):
        mm = None if meta_structure is None else meta_structure.unflatten(m_flat)
        return train_loss(structure.unflatten(w), mm, t)

    problem = Problem(loss_flat, np.array(getval(w0_flat), dtype=np.float64),
                      np.array(getval(v0_flat), dtype=np.float64),
                      np.array(getval(alphas2), dtype=np.float64),
                      np.array(getval(betas2), dtype=np.float64),
                      None if meta_flat is None else np.array(getval(meta_flat), dtype=np.float64),
                      structure.group_index(), frac_bits, kernel, progress, hvp)
    stats = {} if stats is None else stats
    stats.update(method=method, T=problem.T, N=problem.N, groups=G, frac_bits=frac_bits,
                 blind_to=list(m.blind_to))
    if m.traced:
        t0 = time.perf_counter()
        w_T = m.run(problem, w0_flat, v0_flat, alphas2, betas2, meta_flat, stats, **options)
        stats["forward_seconds"] = time.perf_counter() - t0
    else:
        w_T = _sgd_flat(w0_flat, v0_flat, alphas2, betas2, meta_flat,
                        _Context(m, problem, options, stats))
    return structure.unflatten(w_T)


class _Context:
    """Static (non-differentiable) argument of the primitive: method, problem, stats."""

    def __init__(self, method, problem, options, stats):
        self.method, self.problem, self.options, self.stats = method, problem, options, stats
        self.backward = None


@primitive
def _sgd_flat(w0, v0, alphas, betas, meta, ctx):
    w_T, ctx.backward = ctx.method.run(ctx.problem, ctx.stats, **ctx.options)
    return np.asarray(w_T, dtype=np.float64)


def _sgd_vjp_maker(argnums, ans, args, kwargs):
    ctx = args[5]
    wanted = [_ARG_NAMES[i] for i in argnums]
    blind = [name for name in wanted if name in ctx.method.blind_to]
    if blind and len(blind) == len(wanted):
        raise ValueError(
            f"method {ctx.method.name!r} cannot see {', '.join(blind)}: its hypergradient with "
            f"respect to them is zero by construction. Use method='exact' for these, or also "
            "differentiate with respect to a hyperparameter it does see")

    def vjp(g):
        cot = ctx.backward(np.asarray(g, dtype=np.float64))
        out = []
        for name, i in zip(wanted, argnums):
            c = cot.get(name)
            out.append(np.zeros(np.shape(args[i])) if c is None else np.reshape(c, np.shape(args[i])))
        return tuple(out)

    return vjp


defvjp_argnums(_sgd_flat, _sgd_vjp_maker)


def _check_options(method, options):
    """Unknown keyword options for a method are a ValueError listing the ones it takes."""
    params = inspect.signature(method.run).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    fixed = {"problem", "stats", "w0", "v0", "alphas", "betas", "meta"}
    allowed = [name for name in params if name not in fixed]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"method {method.name!r} does not take option(s) {unknown}; "
                         f"its options are {allowed or 'none'}")


def _flatten_like(structure, x):
    s = Structure(x, "v0")
    if s.tree != structure.tree:
        raise ValueError(f"v0 must have the same structure as w0 (containers and shapes); got "
                         f"shapes {s.shapes} for v0 and {structure.shapes} for w0")
    return s.flatten(x)


def _schedule(x, G, name):
    val = np.asarray(getval(x))
    if not np.issubdtype(val.dtype, np.number):
        raise ValueError(f"{name} must be a float array of shape (T,) or (T, {G})")
    if not np.all(np.isfinite(val)):
        raise ValueError(f"{name} contains NaN or Inf")
    if val.ndim == 1:
        if val.shape[0] < 1:
            raise ValueError(f"{name} must have at least one step")
        return anp.repeat(anp.reshape(x, (-1, 1)), G, axis=1) if G > 1 else anp.reshape(x, (-1, 1)) * 1.0
    if val.ndim == 2 and val.shape[1] == G and val.shape[0] >= 1:
        return x * 1.0
    raise ValueError(f"{name} must have shape (T,) or (T, {G}) for {G} parameter group(s); "
                     f"got {val.shape}")
