"""The gradient of the Gaussian-smoothed meta-objective, from exact hypergradients.

ES and PES (:mod:`reversible.methods.es`, :mod:`reversible.methods.pes`)
estimate the gradient of ``f_sigma(theta) = E f(theta + sigma eps)``,
``eps ~ N(0, I)``, not of ``f``.  Its ground truth is

    grad f_sigma(theta) = E grad f(theta + sigma eps),

which :func:`smoothed_gradient` estimates by averaging exact hypergradients
at antithetic pairs ``theta +- sigma eps_i`` and reports with its standard
error (from the spread over pairs).  Unlike ES it has no ``1 / sigma``
factor: its error shrinks with the number of samples, not with sigma.

:func:`reversible.compare` grades against it with a reference spec
``"smoothed:sigma=0.1:samples=16:seed=0:base=exact"`` (``base`` is the method
whose hypergradients are averaged): :func:`for_compare` wraps the objective so
that, under that spec, its autograd gradient is the smoothed estimate.  The
smoothing acts on the hyperparameters given to ``compare``; it coincides
with the smoothing of ``sgd(..., method="es")`` when those are the schedules
and ``meta`` passed to ``sgd`` themselves.
"""

from dataclasses import dataclass

import autograd.numpy as anp
import numpy as np
from autograd import value_and_grad
from autograd.extend import defvjp, primitive
from autograd.tracer import getval

from .methods.es import check_particles, check_seed, check_sigma

__all__ = ["SmoothedGradient", "smoothed_gradient", "SmoothedObjective", "for_compare",
           "reference_info"]


@dataclass
class SmoothedGradient:
    """``mean`` and ``standard_error`` (structured like ``theta``), ``samples``, ``sigma``."""

    mean: object
    standard_error: object
    samples: int
    sigma: float
    value: float = float("nan")      # mean of f over the samples: the smoothed objective


class _Flat:
    """A dict of arrays (or one array) as one float vector, and back."""

    def __init__(self, theta):
        self.is_dict = isinstance(getval(theta), dict)
        self.keys = list(getval(theta)) if self.is_dict else [None]
        vals = [theta[k] for k in self.keys] if self.is_dict else [theta]
        self.shapes = [np.shape(v) for v in vals]
        self.sizes = [int(np.prod(s)) for s in self.shapes]

    def flatten(self, theta, xp=np):
        vals = [theta[k] for k in self.keys] if self.is_dict else [theta]
        return xp.concatenate([xp.ravel(xp.asarray(v) if xp is np else v) for v in vals]) \
            if len(vals) > 1 else xp.ravel(vals[0]) * 1.0

    def unflatten(self, x):
        parts, i = [], 0
        for shape, size in zip(self.shapes, self.sizes):
            parts.append(anp.reshape(x[i:i + size], shape))
            i += size
        return dict(zip(self.keys, parts)) if self.is_dict else parts[0]


def _pairs(samples, name="smoothed"):
    return check_particles(samples, f"{name}: samples") // 2


def smoothed_gradient(grad_fn, theta, sigma, samples=16, seed=0, value_and_grad_fn=None,
                      progress=False):
    """``E grad f(theta + sigma eps)`` from ``samples`` exact gradients (antithetic pairs).

    ``grad_fn(theta)`` returns the gradient structured like ``theta`` (an array
    or a dict of arrays); or give ``value_and_grad_fn(theta) -> (f, grad)`` to
    also get the smoothed value.  ``samples`` is a positive even integer.
    Returns a :class:`SmoothedGradient`; ``standard_error`` is the standard
    error of the mean over the ``samples / 2`` pair averages.
    """
    sigma = check_sigma(sigma, "smoothed")
    n = _pairs(samples)
    seed = check_seed(seed, "smoothed")
    if (grad_fn is None) == (value_and_grad_fn is None):
        raise ValueError("smoothed_gradient: give exactly one of grad_fn and value_and_grad_fn")
    flat = _Flat(theta)
    x0 = flat.flatten(theta)
    eps = np.random.default_rng(seed).standard_normal((n, x0.size))
    pair_grads = np.empty((n, x0.size))
    values = []

    def evaluate(x):
        if value_and_grad_fn is not None:
            v, g = value_and_grad_fn(_numpy(flat.unflatten(x)))
            values.append(float(v))
        else:
            g = grad_fn(_numpy(flat.unflatten(x)))
        g = flat.flatten(g)
        if not np.all(np.isfinite(g)):
            raise FloatingPointError("smoothed_gradient: a hypergradient at a perturbed point is "
                                     "NaN or Inf; lower sigma")
        return g

    it = range(n)
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(it, desc=f"smoothed ({2 * n} exact hypergradients)", leave=False)
    for i in it:
        pair_grads[i] = 0.5 * (evaluate(x0 + sigma * eps[i]) + evaluate(x0 - sigma * eps[i]))
    mean = pair_grads.mean(axis=0)
    se = pair_grads.std(axis=0, ddof=1) / np.sqrt(n) if n > 1 else np.full(x0.size, np.nan)
    return SmoothedGradient(_numpy(flat.unflatten(mean)), _numpy(flat.unflatten(se)), 2 * n, sigma,
                            float(np.mean(values)) if values else float("nan"))


def _numpy(tree):
    return {k: np.asarray(v) for k, v in tree.items()} if isinstance(tree, dict) else np.asarray(tree)


# ------------------------------------------------------------------ compare's reference
class SmoothedObjective:
    """``objective(hypers, spec)`` whose gradient, under the smoothed spec, is the smoothed one.

    Under any other spec it is ``objective`` itself.  Picklable when
    ``objective`` is (for ``compare(..., jobs>1)``).  After a gradient under
    the smoothed spec, ``last`` holds that :class:`SmoothedGradient`.
    """

    def __init__(self, objective, spec):
        from .grading import parse_spec, spec_label
        name, opts = parse_spec(spec)
        if name != "smoothed":
            raise ValueError(f"not a smoothed reference spec: {spec!r}")
        unknown = sorted(set(opts) - {"sigma", "samples", "seed", "base"})
        if unknown:
            raise ValueError(f"smoothed reference: unknown option(s) {unknown}; its options are "
                             "sigma, samples, seed and base (a method name)")
        if "sigma" not in opts:
            raise ValueError("smoothed reference: give sigma, e.g. 'smoothed:sigma=0.1:samples=16'")
        self.objective, self.label = objective, spec_label(spec)
        self.sigma = check_sigma(opts["sigma"], "smoothed")
        self.samples = 2 * _pairs(opts.get("samples", 16))
        self.seed = check_seed(opts.get("seed", 0), "smoothed")
        self.base = str(opts.get("base", "exact"))
        self.last = None

    def __call__(self, hypers, spec):
        from .grading import spec_label
        if spec_label(spec) != self.label:
            return self.objective(hypers, spec)
        flat = _Flat(hypers)
        return _smoothed_value(flat.flatten(hypers, anp), self, flat)

    def evaluate(self, x, flat):
        """Smoothed value and gradient (flat) at the flat point ``x``."""
        def vg(theta):
            f = value_and_grad(lambda h: self.objective(h, self.base))
            return f(theta)
        self.last = smoothed_gradient(None, _numpy(flat.unflatten(np.asarray(x))), self.sigma,
                                      self.samples, self.seed, value_and_grad_fn=vg)
        return self.last.value, flat.flatten(self.last.mean)


@primitive
def _smoothed_value(x, ctx, flat):
    value, ctx._grad = ctx.evaluate(x, flat)
    return value


defvjp(_smoothed_value, lambda ans, x, ctx, flat: lambda g: g * ctx._grad)


def for_compare(objective, reference):
    """``(objective, reference)`` for :func:`reversible.compare`: wrapped when ``reference``
    names ``smoothed``, unchanged otherwise."""
    from .grading import parse_spec
    if parse_spec(reference)[0] != "smoothed":
        return objective, reference
    return SmoothedObjective(objective, reference), reference


def reference_info(objective):
    """What a compare table records about a smoothed reference (empty for any other)."""
    if not isinstance(objective, SmoothedObjective) or objective.last is None:
        return {}
    last = objective.last
    se = last.standard_error
    se = {k: np.asarray(v).tolist() for k, v in se.items()} if isinstance(se, dict) else \
        np.asarray(se).tolist()
    return {"reference_standard_error": se, "reference_samples": last.samples,
            "reference_sigma": last.sigma, "reference_base": objective.base}
