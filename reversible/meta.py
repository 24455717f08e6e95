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
    :class:`NonFiniteError` naming the iteration.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}; got {optimizer!r}")
    steps = int(steps)
    if steps < 0:
        raise ValueError(f"steps must be >= 0; got {steps}")
    if not (np.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number; got {lr!r}")
    if clip is not None and not clip > 0:
        raise ValueError(f"clip must be positive or None; got {clip!r}")
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
