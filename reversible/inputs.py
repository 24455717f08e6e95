"""A training call's arguments, validated once, turned into flat vectors and a :class:`Problem`.

Every front end that trains (``reversible.sgd``, ``reversible.checkpoint.train``,
an Adam front end) goes through here, so each argument is checked in one
place with one message:

* :func:`parameters` checks ``w0`` / ``v0`` / ``meta`` (real, finite, matching
  containers) and flattens them, keeping autograd boxes differentiable;
* :func:`schedule` checks a per-step hyperparameter of shape ``(T,)`` or
  ``(T, G)`` against an interval and returns it as ``(T, G)``;
* :func:`sgd_inputs` does all of it for SGD with momentum and builds the
  :class:`~reversible.problem.Problem` that every hypergradient method runs on.

Single values (step sizes of an optimiser, flags, choices, ``stats``) are
checked with :mod:`reversible.validate`.
"""

from dataclasses import dataclass

import autograd.numpy as anp
import numpy as np
from autograd.tracer import getval

from . import validate
from .buffer import quantize_beta
from .fixedpoint import DEFAULT_FRAC_BITS, check_frac_bits
from .problem import Problem
from .structure import Structure

HVP_MODES = ("auto", "forward", "reverse")


@dataclass
class Parameters:
    """``w0``, ``v0`` and ``meta`` flattened, with the layouts to rebuild them.

    The flat vectors are float64 and stay autograd boxes when the caller's
    arguments were boxed (so a traced method can differentiate through them).
    """

    structure: Structure
    meta_structure: object       # Structure or None
    w0: object
    v0: object
    meta: object                 # flat vector or None

    @property
    def num_groups(self):
        return self.structure.num_groups

    def unflatten(self, w_flat):
        return self.structure.unflatten(w_flat)


def parameters(w0, meta=None, v0=None):
    """Check and flatten the trained parameters ``w0``, their velocity ``v0`` and ``meta``."""
    structure = Structure(w0, "w0")
    if v0 is None:
        v0_flat = np.zeros(structure.size)
    else:
        s = Structure(v0, "v0")
        if s.tree != structure.tree:
            raise ValueError(f"v0 must have the same structure as w0 (containers and shapes); "
                             f"got shapes {s.shapes} for v0 and {structure.shapes} for w0")
        v0_flat = s.flatten(v0)
    meta_structure = None if meta is None else Structure(meta, "meta")
    meta_flat = None if meta is None else meta_structure.flatten(meta)
    return Parameters(structure, meta_structure, structure.flatten(w0), v0_flat, meta_flat)


def schedule(x, G, name, low=None, high=None, low_open=False, high_open=False, hint=""):
    """A per-step hyperparameter of shape ``(T,)`` (shared) or ``(T, G)`` as ``(T, G)`` float64.

    Checks that ``x`` is real and finite, has at least one step, and that every
    entry lies in the interval; a boxed ``x`` stays differentiable.
    """
    val = validate.real_array(x, name)
    if val.ndim not in (1, 2) or (val.ndim == 2 and val.shape[1] != G):
        raise ValueError(f"{name} must have shape (T,) or (T, {G}) for {G} parameter group(s); "
                         f"got {val.shape}")
    if val.shape[0] < 1:
        raise ValueError(f"{name} must have at least one step; got shape {val.shape}")
    validate.in_interval(val, name, low, high, low_open, high_open, hint, ("step", "group"))
    if val.ndim == 2:
        return x if isinstance(x, np.ndarray) and x.dtype == np.float64 else x * 1.0
    column = anp.reshape(x, (-1, 1)) * 1.0
    return anp.repeat(column, G, axis=1) if G > 1 else column


def same_steps(**schedules):
    """The common number of steps of ``(T, G)`` schedules; ``ValueError`` if they differ."""
    items = [(name, anp.shape(s)[0]) for name, s in schedules.items()]
    first, T = items[0]
    for name, steps in items[1:]:
        if steps != T:
            raise ValueError(f"{first} has {T} steps but {name} has {steps}; give every "
                             "schedule one row per training step")
    return T


ALPHA_HINT = ("Step sizes must be positive: parameterise a learned step size as "
              "exp(log_alpha); to freeze a parameter group, leave it out of w0")


def momentum_schedule(betas, G, name="betas"):
    """Momenta in (0, 1] as ``(T, G)``, refusing any the engine's quantum rounds to zero."""
    out = schedule(betas, G, name, 0.0, 1.0, low_open=True,
                   hint="Parameterise a learned momentum as a logistic, 1 / (1 + exp(-x))")
    quantize_beta(getval(out))
    return out


def per_group_values(x, G, name):
    """A positive scalar or one value per group (Adam's ``eps``): the checked values (0-d or ``(G,)``)."""
    val = validate.real_array(x, name)
    validate.in_interval(val, name, 0.0, low_open=True)
    if val.ndim == 0 or val.shape == (G,):
        return val
    raise ValueError(f"{name} must be a scalar or one value per group ({G},); got {val.shape}")


def decay_values(x, G, T):
    """AdamW's ``weight_decay``, each >= 0: a scalar, one per group or a ``(T, G)`` schedule
    (the checked values, shape unchanged)."""
    val = validate.real_array(x, "weight_decay")
    validate.in_interval(val, "weight_decay", 0.0)
    if val.ndim == 0 or val.shape == (G,) or val.shape == (T, G):
        return val
    raise ValueError(f"weight_decay must be a scalar, one per group ({G},) or a schedule "
                     f"({T}, {G}); got {val.shape}")


@dataclass
class SGDInputs:
    """Everything :func:`reversible.sgd` needs after validation."""

    params: Parameters
    alphas: object               # (T, G), possibly an autograd box
    betas: object                # (T, G), possibly an autograd box
    problem: Problem
    stats: dict


def sgd_inputs(train_loss, w0, alphas, betas, meta=None, *, v0=None, frac_bits=None,
               kernel="auto", progress=False, hvp="auto", stats=None, fixed_point=True):
    """Validate the arguments of :func:`reversible.sgd` and build its :class:`Problem`.

    ``fixed_point``: the run trains in fixed point, so the problem checks on
    step 0 that ``frac_bits`` resolves the increments (:mod:`reversible.resolution`).
    """
    validate.function(train_loss, "train_loss", " train_loss(w, meta, t) -> scalar")
    stats = validate.stats_dict(stats)
    params = parameters(w0, meta, v0)
    G = params.num_groups
    hyper = sgd_hyperparameters(alphas, betas, G)
    alphas2, betas2 = hyper["alphas"], hyper["betas"]
    frac_bits = check_frac_bits(DEFAULT_FRAC_BITS if frac_bits is None else frac_bits)
    if not isinstance(kernel, str):
        raise TypeError(f"kernel must be a kernel name (a str); got {kernel!r}")
    progress = validate.flag(progress, "progress")
    validate.choice(hvp, "hvp", HVP_MODES)
    problem = Problem.from_containers(
        train_loss, params.structure, params.meta_structure,
        w0=_read_only(params.w0), v0=_read_only(params.v0), alphas=_read_only(alphas2),
        betas=_read_only(betas2), meta=None if params.meta is None else _read_only(params.meta),
        frac_bits=frac_bits, kernel=kernel, progress=progress, hvp=hvp,
        check_resolution=bool(fixed_point))
    return SGDInputs(params, alphas2, betas2, problem, stats)


def sgd_hyperparameters(alphas, betas, G):
    """``alphas`` and ``betas`` as given, checked and expanded to ``(T, G)`` (differentiable)."""
    alphas2 = schedule(alphas, G, "alphas", 0.0, low_open=True, hint=ALPHA_HINT)
    betas2 = momentum_schedule(betas, G)
    same_steps(alphas=alphas2, betas=betas2)
    return {"alphas": alphas2, "betas": betas2}


def _read_only(x):
    """The float64 value of a possibly boxed array as a read-only view (no copy of the user's
    array: a method that tried to update it in place would raise instead of corrupting it)."""
    out = np.asarray(getval(x), dtype=np.float64).view()
    out.flags.writeable = False
    return out
