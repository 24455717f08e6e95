"""``reversible.sgd``: SGD with momentum as an autograd primitive whose VJP is a hypergradient method."""

import time

from . import methods
from .inputs import sgd_inputs
from .primitive import MethodCall, training_primitive

_sgd_flat = training_primitive(("w0", "v0", "alphas", "betas", "meta"))
FIXED_POINT_METHODS = ("exact", "drmad")     # the methods whose training runs at frac_bits


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
    ``reversible.effective_beta(beta)`` (the engine's quantum) by every method.

    Arguments are validated by :func:`reversible.inputs.sgd_inputs`: complex,
    non-finite or out-of-range values (a step size <= 0, a momentum outside
    ``(0, 1]``) raise an error naming the argument; nothing is silently cast.

    ``frac_bits`` (default 52) sets the fixed point of the exact engine:
    resolution ``2**-frac_bits``, range ``|w|, |v| < 2**(63 - frac_bits)``; the
    information buffer's size does not depend on it.  Step 0 checks that the
    resolution suits the increments: coarse (``frac_bits=16`` on the digits
    MLP: weights about 0.3 % off float64 training) gives a
    ``ResolutionWarning``, hopeless (``frac_bits=12`` there, 5 % off) a
    ``ValueError`` naming the ``frac_bits`` that would do (see
    :mod:`reversible.resolution`).

    ``stats``, if a dict, is filled with timings and information-buffer
    figures (``buffer_bits``, ``bits_per_element_step``,
    ``ideal_bits_per_element_step``, ``reversed_exactly``,
    ``first_step_rounding``, ...).
    """
    m = methods.get(method)
    methods.check_options(m.name, options, m.option_names())
    inp = sgd_inputs(train_loss, w0, alphas, betas, meta, v0=v0, frac_bits=frac_bits,
                     kernel=kernel, progress=progress, hvp=hvp, stats=stats,
                     fixed_point=method in FIXED_POINT_METHODS)
    problem, params, stats = inp.problem, inp.params, inp.stats
    stats.update(method=method, T=problem.T, N=problem.N, groups=problem.G,
                 frac_bits=problem.frac_bits, blind_to=list(m.blind_to))
    if m.traced:
        t0 = time.perf_counter()
        w_T = m.run(problem, params.w0, params.v0, inp.alphas, inp.betas, params.meta, stats,
                    **options)
        stats["forward_seconds"] = time.perf_counter() - t0
    else:
        w_T = _sgd_flat(params.w0, params.v0, inp.alphas, inp.betas, params.meta,
                        MethodCall(m, problem, options, stats))
    return params.unflatten(w_T)

