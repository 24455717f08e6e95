"""``method="forward"``: forward-mode hypergradients (Franceschi et al. 2017).

Each hyperparameter direction ``d`` carries tangents ``(z_w, z_v) = d(w_t, v_t)/d
eps`` through float64 training (``v' = beta v - (1-beta) g``, ``w' = w + alpha v'``)::

    z_v' = beta z_v + dbeta (v + g) - (1 - beta) (H_ww z_w + H_{w,meta} dmeta)
    z_w' = z_w + alpha z_v' + dalpha v'

so ``w_T``'s Jacobian along every direction is known at the end of training,
and the VJP is ``<dw_T, z_w(T)>`` per direction: exact like ``unrolled``, at
one tangent (one Hessian-vector product per step) per direction and ``O(N)``
memory per direction.

``basis`` chooses the directions per hyperparameter kind (``w0``, ``v0``,
``alphas``, ``betas``, ``meta``): ``"full"`` (every coordinate; the default),
``"groups"`` (one direction per parameter group: ones on the group; for
``alphas`` / ``betas``, a constant change of that group's whole schedule),
``"scale"`` (the current value restricted to each group, i.e. a relative
change), an array of directions ``(D, size)``, or ``None`` (no tangents).
The cotangent returned is the least-squares one within the span of the
directions, which is exact for any hyperparameterisation that moves only
within that span.  A kind without directions gets NaN cotangents, so that
using it cannot go unnoticed.
"""

import autograd.numpy as anp
import numpy as np
from autograd import grad as ag_grad

from . import HYPER_KINDS, register


def _kind_value(problem, kind):
    return {"w0": problem.w0, "v0": problem.v0, "alphas": problem.alphas.ravel(),
            "betas": problem.betas.ravel(), "meta": problem.meta}[kind]


def _group_of_coordinate(problem, kind):
    if kind in ("w0", "v0"):
        return problem.group_index
    return np.tile(np.arange(problem.G), problem.T)          # (T, G) raveled


def resolve_basis(problem, kind, spec):
    """Directions ``(D, size)`` for one kind (``None`` when it gets no tangents)."""
    value = _kind_value(problem, kind)
    if value is None or spec is None or (isinstance(spec, str) and spec == "none"):
        return None
    size = value.size
    if isinstance(spec, str):
        if spec == "full":
            return np.eye(size)
        if spec in ("groups", "scale"):
            if kind == "meta":
                raise ValueError("forward: basis 'groups' / 'scale' is not defined for meta; "
                                 "use 'full' or an array of directions")
            groups = _group_of_coordinate(problem, kind)
            rows = (groups[None, :] == np.arange(problem.G)[:, None]).astype(np.float64)
            return rows if spec == "groups" else rows * value[None, :]
        raise ValueError(f"forward: basis for {kind} must be 'full', 'groups', 'scale', 'none', "
                         f"an array or None; got {spec!r}")
    B = np.atleast_2d(np.asarray(spec, dtype=np.float64))
    if B.shape[1] != size:
        raise ValueError(f"forward: directions for {kind} must have {size} columns; got {B.shape}")
    return B


class _Tangents:
    """All directions stacked: initial tangents and per-step schedule / meta components."""

    def __init__(self, problem, bases):
        self.kinds = []                     # (kind, slice of directions, basis)
        rows = 0
        for kind in HYPER_KINDS:
            B = bases.get(kind)
            if B is not None:
                self.kinds.append((kind, slice(rows, rows + B.shape[0]), B))
                rows += B.shape[0]
        D, N, T, G = rows, problem.N, problem.T, problem.G
        self.D = D
        self.zw = np.zeros((D, N))
        self.zv = np.zeros((D, N))
        self.dalpha = np.zeros((D, T, G))
        self.dbeta = np.zeros((D, T, G))
        self.dmeta = np.zeros((D, problem.meta_size)) if problem.meta_size else None
        for kind, sl, B in self.kinds:
            if kind == "w0":
                self.zw[sl] = B
            elif kind == "v0":
                self.zv[sl] = B
            elif kind == "alphas":
                self.dalpha[sl] = B.reshape(-1, T, G)
            elif kind == "betas":
                self.dbeta[sl] = B.reshape(-1, T, G)
            else:
                self.dmeta[sl] = B


@register("forward")
def run_forward(problem, stats, basis=None):
    """Forward-mode hypergradients: one tangent per hyperparameter direction (default: all)."""
    spec = {kind: "full" for kind in HYPER_KINDS}
    if basis is not None:
        unknown = set(basis) - set(HYPER_KINDS)
        if unknown:
            raise ValueError(f"forward: basis has unknown kinds {sorted(unknown)}; "
                             f"use {HYPER_KINDS}")
        spec.update(basis)
    bases = {kind: resolve_basis(problem, kind, spec[kind]) for kind in HYPER_KINDS}
    tan = _Tangents(problem, bases)
    mixed = None
    if problem.meta_size:
        grad_meta = ag_grad(problem.loss, 1)
        mixed = ag_grad(lambda w, m, t, dm: anp.dot(grad_meta(w, m, t), dm), 0)
    betas_eff = problem.effective_betas()
    gi = problem.group_index
    w, v = problem.w0.copy(), problem.v0.copy()
    hvps = 0
    for t in range(problem.T):
        g = problem.grad(w, problem.meta, t)
        alpha, beta = problem.alphas[t][gi], betas_eff[t][gi]
        v_new = beta * v - (1.0 - beta) * g
        w_new = w + alpha * v_new
        for d in range(tan.D):
            hz = 0.0
            if np.any(tan.zw[d]):
                hz = problem.vjp(w, problem.meta, t, tan.zw[d])[1]
                hvps += 1
            if tan.dmeta is not None and np.any(tan.dmeta[d]):
                hz = hz + mixed(w, problem.meta, t, tan.dmeta[d])
                hvps += 1
            zv = beta * tan.zv[d] + tan.dbeta[d, t][gi] * (v + g) - (1.0 - beta) * hz
            tan.zw[d] = tan.zw[d] + alpha * zv + tan.dalpha[d, t][gi] * v_new
            tan.zv[d] = zv
        w, v = w_new, v_new
    stats.update(directions=tan.D, tangent_hvps=hvps,
                 forward_basis={k: (None if b is None else int(b.shape[0])) for k, b in bases.items()})

    def backward(dw):
        coeffs = tan.zw @ np.asarray(dw, dtype=np.float64)
        shapes = {"w0": (problem.N,), "v0": (problem.N,), "alphas": (problem.T, problem.G),
                  "betas": (problem.T, problem.G), "meta": (problem.meta_size,)}
        out = {k: np.full(shapes[k], np.nan) for k in HYPER_KINDS}
        if not problem.meta_size:
            out["meta"] = None
        for kind, sl, B in tan.kinds:
            c = coeffs[sl]
            if spec[kind] == "full":
                cot = c
            else:   # least-squares cotangent within span(B): B^T (B B^T)^+ c
                cot = B.T @ np.linalg.lstsq(B @ B.T, c, rcond=None)[0]
            out[kind] = cot.reshape(shapes[kind])
        return out

    return w, backward
