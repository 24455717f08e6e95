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

from . import validate
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
    before the first evaluation (``b1``, ``b2`` in [0, 1); ``lr``, ``eps``,
    ``clip`` finite and positive; ``steps`` a non-negative int): a value of the
    wrong kind raises ``TypeError``, one out of range ``ValueError``.
    """
    steps = _check_options(optimizer, steps, lr, clip, b1, b2, eps, callback, progress)
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


def _check_options(optimizer, steps, lr, clip, b1, b2, eps, callback, progress):
    """Validate every option of :func:`optimize` (one message per option); returns ``steps``."""
    validate.choice(optimizer, "optimizer", OPTIMIZERS)
    steps = validate.scalar(steps, "steps", 0, integer=True)
    validate.scalar(lr, "lr", 0, low_open=True, hint="lr is the meta-step size")
    if clip is not None:
        validate.scalar(clip, "clip", 0, low_open=True, hint="clip caps the hypergradient's norm")
    for name, value in (("b1", b1), ("b2", b2)):
        validate.scalar(value, name, 0, 1, high_open=True,
                        hint=f"{name} is a decay rate of Adam's moment estimates")
    validate.scalar(eps, "eps", 0, low_open=True, hint="eps keeps Adam's denominator positive")
    if callback is not None:
        validate.function(callback, "callback", " callback(i, hypers, objective, grad)")
    validate.flag(progress, "progress")
    return steps
