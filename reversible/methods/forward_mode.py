"""``method="forward"``: forward-mode hypergradients (Franceschi et al. 2017), for any update rule.

Each hyperparameter direction ``d`` carries the tangent of the training state
``z = d(w_t, aux_t)/d eps`` through float64 training: one Jacobian-vector
product of the update rule's own float step per direction and step (autograd
forward mode through the step, whose gradient makes it one Hessian-vector
product).  For SGD with momentum that is::

    z_v' = beta z_v + dbeta (v + g) - (1 - beta) (H_ww z_w + H_{w,meta} dmeta)
    z_w' = z_w + alpha z_v' + dalpha v'

so ``w_T``'s Jacobian along every direction is known at the end of training,
and the VJP is ``<dw_T, z_w(T)>`` per direction: exact like ``unrolled``, at
``O(N)`` memory per direction.

``basis`` chooses the directions per hyperparameter kind (momentum: ``w0``,
``v0``, ``alphas``, ``betas``, ``meta``; Adam: ``w0``, ``alphas``, ``beta1s``,
``beta2s``, ``eps``, ``weight_decay``, ``meta``): ``"full"`` (every
coordinate; the default), ``"groups"`` (one direction per parameter group:
ones on the group; for a schedule, a constant change of that group's whole
schedule), ``"scale"`` (the current value restricted to each group, i.e. a
relative change), an array of directions ``(D, size)``, or ``None`` (no
tangents).  The cotangent returned is the least-squares one within the span
of the directions, which is exact for any hyperparameterisation that moves
only within that span.  A kind without directions gets NaN cotangents, so that
using it cannot go unnoticed.
"""

import autograd.numpy as anp
import numpy as np
from autograd import grad as ag_grad
from autograd import make_jvp

from .. import trajectory
from . import register
from .checkpointed import problem_rule


def _kinds(rule):
    return tuple(rule.state_kinds) + tuple(rule.hyper_kinds) + ("meta",)


def _values(problem, rule):
    raw = rule.raw_hyper(problem)
    out = {"w0": problem.w0, "v0": problem.v0, "meta": problem.meta}
    out.update(raw)
    return out


def _group_of_coordinate(problem, value):
    if value.shape == (problem.T, problem.G):
        return np.tile(np.arange(problem.G), problem.T)          # (T, G) raveled
    if value.shape == (problem.G,):
        return np.arange(problem.G)
    return problem.group_index


def resolve_basis(problem, kind, spec, value):
    """Directions ``(D, size)`` for one kind (``None`` when it gets no tangents)."""
    if value is None or spec is None or (isinstance(spec, str) and spec == "none"):
        return None
    value = np.asarray(value, dtype=np.float64)
    size = value.size
    if isinstance(spec, str):
        if spec == "full":
            return np.eye(size)
        if spec in ("groups", "scale"):
            if kind == "meta":
                raise ValueError("forward: basis 'groups' / 'scale' is not defined for meta; "
                                 "use 'full' or an array of directions")
            groups = _group_of_coordinate(problem, value)
            rows = (groups[None, :] == np.arange(problem.G)[:, None]).astype(np.float64)
            return rows if spec == "groups" else rows * value.ravel()[None, :]
        raise ValueError(f"forward: basis for {kind} must be 'full', 'groups', 'scale', 'none', "
                         f"an array or None; got {spec!r}")
    B = np.atleast_2d(np.asarray(spec, dtype=np.float64))
    if B.shape[1] != size or not np.all(np.isfinite(B)):
        raise ValueError(f"forward: directions for {kind} must be finite with {size} columns; "
                         f"got shape {B.shape}")
    return B


@register("forward")
def run_forward(problem, stats, basis=None):
    """Forward-mode hypergradients: one tangent per hyperparameter direction (default: all)."""
    rule = problem_rule(problem)
    kinds = _kinds(rule)
    values = _values(problem, rule)
    spec = {kind: "full" for kind in kinds}
    if basis is not None:
        unknown = set(basis) - set(kinds)
        if unknown:
            raise ValueError(f"forward: basis has unknown kinds {sorted(unknown)}; "
                             f"use {kinds}")
        spec.update(basis)
    bases = {kind: resolve_basis(problem, kind, spec[kind], values[kind]) for kind in kinds}
    directions = []                          # (kind, slice, basis)
    rows = 0
    for kind in kinds:
        if bases[kind] is not None:
            directions.append((kind, slice(rows, rows + bases[kind].shape[0]), bases[kind]))
            rows += bases[kind].shape[0]
    D = rows

    def tangent_of(kind_name, d):
        """Direction ``d``'s component for ``kind_name`` (zeros outside its kind)."""
        value = np.asarray(values[kind_name], dtype=np.float64)
        for kind, sl, B in directions:
            if kind == kind_name and sl.start <= d < sl.stop:
                return B[d - sl.start].reshape(value.shape)
        return np.zeros(value.shape)

    raw = {k: np.asarray(values[k], dtype=np.float64) for k in rule.hyper_kinds}
    hyper = rule.float_hyper()
    traced = {key: make_jvp(lambda r, key=key: rule.traced_hyper(r)[key])(raw) for key in hyper}
    d_hyper = []
    for d in range(D):
        direction = {k: tangent_of(k, d) for k in rule.hyper_kinds}
        d_hyper.append({key: np.asarray(jvp(direction)[1]) for key, jvp in traced.items()})
    w, aux = rule.float_start(problem)
    zw = np.stack([tangent_of("w0", d) if "w0" in values else np.zeros(problem.N)
                   for d in range(D)]) if D else np.zeros((0, problem.N))
    z_aux = [np.zeros((D, problem.N)) for _ in aux]
    if "v0" in rule.state_kinds:
        z_aux[0] = np.stack([tangent_of("v0", d) for d in range(D)]) if D else z_aux[0]
    d_meta = [tangent_of("meta", d) if problem.meta_size else None for d in range(D)]
    dloss = ag_grad(problem.loss, 0)
    per_step = {k for k, v in hyper.items() if np.ndim(v) == 2}
    jvps = 0
    for t in range(problem.T):
        w_next, aux_next = trajectory.float_train(rule, problem.grad, w, aux, problem.meta, t, t + 1)

        def step(x, t=t):
            w_, aux_, h_ = x[:3]
            m_ = x[3] if len(x) > 3 else None
            full = {k: (v[None] if k in per_step else v) for k, v in h_.items()}
            w_next_, aux_next_ = rule.float_step(full, 0, w_, aux_, dloss(w_, m_, t))
            return anp.concatenate([w_next_] + list(aux_next_))   # one array: forward mode needs it

        rows_t = {k: (v[t] if k in per_step else v) for k, v in hyper.items()}
        for d in range(D):
            if not (np.any(zw[d]) or any(np.any(z[d]) for z in z_aux)
                    or any(np.any(d_hyper[d][k][t] if k in per_step else d_hyper[d][k])
                           for k in hyper)
                    or (d_meta[d] is not None and np.any(d_meta[d]))):
                continue                      # nothing to carry yet: the tangent stays zero
            tangent = (zw[d], tuple(z[d] for z in z_aux),
                       {k: (d_hyper[d][k][t] if k in per_step else d_hyper[d][k]) for k in hyper})
            point = (w, aux, rows_t)
            if problem.meta_size:
                tangent, point = tangent + (d_meta[d],), point + (problem.meta,)
            tz = make_jvp(step)(point)(tangent)[1]
            tz = trajectory.check_vector(tz, tz.size, "tangent (Hessian-vector product)",
                                         t).reshape(1 + len(z_aux), problem.N)
            jvps += 1
            zw[d] = tz[0]
            for z, row in zip(z_aux, tz[1:]):
                z[d] = row
        w, aux = w_next, aux_next
    stats.update(directions=D, tangent_hvps=jvps,
                 forward_basis={k: (None if b is None else int(b.shape[0])) for k, b in bases.items()})

    def backward(dw):
        coeffs = zw @ np.asarray(dw, dtype=np.float64)
        out = {}
        for kind in kinds:
            value = values[kind]
            out[kind] = None if value is None else np.full(np.shape(value), np.nan)
        for kind, sl, B in directions:
            c = coeffs[sl]
            if spec[kind] == "full":
                cot = c
            else:   # least-squares cotangent within span(B): B^T (B B^T)^+ c
                cot = B.T @ np.linalg.lstsq(B @ B.T, c, rcond=None)[0]
            out[kind] = cot.reshape(np.shape(values[kind]))
        return out

    return w, backward
