"""Meta-optimisation: gradient descent on hyperparameters with hypergradients.

``optimize(meta_objective, hypers0, steps)`` runs Adam, plain SGD or sign-SGD
(the meta-step of Maclaurin et al. and of the DrMAD thesis, which only trusts
the sign of each hypergradient) on ``meta_objective(hypers, i)``, a scalar
written with autograd.numpy - usually a validation loss of
:func:`reversible.sgd`'s result.  ``i`` is the meta-iteration, e.g. to draw a
new training seed each time.
"""

from dataclasses import dataclass, field

import numpy as np
from autograd import value_and_grad

from .errors import NonFiniteError
from .structure import Structure

OPTIMIZERS = ("adam", "sgd", "sign")


@dataclass
class MetaResult:
    """Outcome of :func:`optimize`: final hyperparameters and the per-iteration history."""

    hypers: object
    objectives: np.ndarray
    grad_norms: np.ndarray
    hypers_history: list = field(repr=False)
    stopped_early: bool = False

    def to_json(self):
        """A JSON-serialisable summary (objective and gradient-norm curves)."""
        return {"objectives": self.objectives.tolist(), "grad_norms": self.grad_norms.tolist(),
                "iterations": int(self.objectives.size), "stopped_early": self.stopped_early}


def optimize(meta_objective, hypers0, steps, optimizer="adam", lr=0.01, progress=True,
             callback=None, clip=None, b1=0.9, b2=0.999, eps=1e-8):
    """Minimise ``meta_objective(hypers, i)`` over ``steps`` meta-iterations.

    ``hypers0`` is an array or a list / tuple / dict of arrays.  ``clip``, if
    given, caps the global L2 norm of each hypergradient.  ``callback(i,
    hypers, objective, grad)`` is called after every evaluation; returning
    True stops early.  A non-finite objective or hypergradient raises
    :class:`NonFiniteError` naming the iteration.  Every option is validated
    (``b1``, ``b2`` in [0, 1); ``lr``, ``eps``, ``clip`` finite and positive;
    ``steps`` a non-negative int) before the first evaluation.
    """
    steps = _check_options(optimizer, steps, lr, clip, b1, b2, eps, callback)
    structure = Structure(hypers0, "hypers0")
    x = np.array(structure.flatten(hypers0), dtype=np.float64)
    objective_and_grad = value_and_grad(lambda flat, i: meta_objective(structure.unflatten(flat), i))
    m, v = np.zeros_like(x), np.zeros_like(x)
    objectives, grad_norms, history = [], [], []
    stopped = False
    iterator = range(steps)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        iterator = bar = tqdm(iterator, desc=f"meta ({optimizer})", leave=False)
    for i in iterator:
        history.append(structure.unflatten(x.copy()))
        value, g = objective_and_grad(x, i)
        value, g = float(value), np.asarray(g, dtype=np.float64)
        if not np.isfinite(value) or not np.all(np.isfinite(g)):
            raise NonFiniteError(
                f"meta-objective or its hypergradient is not finite at meta-iteration {i} "
                f"(objective {value}); lower lr or constrain the hyperparameters "
                "(e.g. exp / logistic parameterisation)")
        norm = float(np.linalg.norm(g))
        objectives.append(value)
        grad_norms.append(norm)
        if bar is not None:
            bar.set_postfix(objective=f"{value:.4g}")
        if callback is not None and callback(i, structure.unflatten(x.copy()), value, g):
            stopped = True
            break
        if clip is not None and norm > clip:
            g = g * (clip / norm)
        if optimizer == "adam":
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g ** 2
            x = x - lr * (m / (1 - b1 ** (i + 1))) / (np.sqrt(v / (1 - b2 ** (i + 1))) + eps)
        elif optimizer == "sgd":
            x = x - lr * g
        else:
            x = x - lr * np.sign(g)
    return MetaResult(structure.unflatten(x), np.array(objectives), np.array(grad_norms),
                      history, stopped)


def _real(name, value):
    """``value`` as a float if it is a real number (not bool, complex or a string), else ValueError."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                     np.floating)):
        raise ValueError(f"{name} must be a real number; got {value!r}")
    return float(value)


def _check_options(optimizer, steps, lr, clip, b1, b2, eps, callback):
    """Validate every option of :func:`optimize`; returns ``steps`` as an int."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}; got {optimizer!r}")
    if isinstance(steps, (bool, np.bool_)) or not isinstance(steps, (int, np.integer)) \
            or steps < 0:
        raise ValueError(f"steps must be a non-negative int; got {steps!r}")
    lr_value = _real("lr", lr)
    if not (np.isfinite(lr_value) and lr_value > 0):
        raise ValueError(f"lr must be a finite positive number; got {lr!r}")
    if clip is not None:
        clip_value = _real("clip", clip)
        if not (np.isfinite(clip_value) and clip_value > 0):
            raise ValueError(f"clip must be a finite positive number or None; got {clip!r}")
    for name, value in (("b1", b1), ("b2", b2)):
        v = _real(name, value)
        if not 0 <= v < 1:
            raise ValueError(f"{name} (Adam's decay rate) must lie in [0, 1); got {value!r}")
    eps_value = _real("eps", eps)
    if not (np.isfinite(eps_value) and eps_value > 0):
        raise ValueError(f"eps must be a finite positive number (Adam's denominator floor); "
                         f"got {eps!r}")
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be callable or None; got {type(callback).__name__}")
    return int(steps)
