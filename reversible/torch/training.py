"""What ``reversible.torch.sgd`` and ``adam`` share: checked inputs, the autograd op, CPU runs.

* :func:`prepare` checks the loss, parameter containers and single values,
  flattens ``params0`` / ``v0`` / ``meta`` and runs the step-0 checks (a real
  scalar loss, the same gradient bits twice);
* :func:`schedule_tensor` turns a per-step hyperparameter into a differentiable
  ``(T, G)`` tensor after :mod:`reversible.inputs` checked its values;
* :class:`TrainingRun` is the ``torch.autograd.Function`` whose forward trains
  and whose backward is a method's reverse pass; :class:`CpuRun` runs a
  registered method on CPU tensors;
* :func:`unrolled_gradient` and :func:`straight_through_beta` are the pieces of
  the PyTorch reference loops (``method="unrolled"``).
"""

import time
from dataclasses import dataclass

import numpy as np
import torch

from .. import inputs, validate
from ..buffer import effective_beta
from ..errors import NonFiniteError, ReversibilityError
from . import determinism
from .derivatives import LossDerivatives
from .problem import as_numpy, as_tensor
from .tree import TensorTree


@dataclass
class Prepared:
    """The checked, flattened arguments of a training call."""

    tree: TensorTree
    meta_tree: object            # TensorTree or None
    w0: torch.Tensor             # flat float64, differentiable
    meta: object                 # flat float64 tensor (differentiable) or None
    derivs: LossDerivatives
    stats: dict

    @property
    def device(self):
        return self.tree.device

    @property
    def w0_value(self):
        return self.w0.detach()

    @property
    def meta_value(self):
        return None if self.meta is None else self.meta.detach()

    def flat_like_params(self, x, name):
        """``x`` (shaped like ``params0``) as a flat float64 tensor on the parameters' device."""
        return on_device(self.tree.flatten(x, name), self.device, name)

    def check_step0(self, check_determinism):
        """The loss at step 0 is a finite real scalar; its gradient has the same bits twice."""
        d, w, m = self.derivs, self.w0_value, self.meta_value
        d.loss_value(w, m, 0)
        if check_determinism:
            determinism.check_repeatable(d.grad(w, m, 0), d.grad(w, m, 0),
                                         "the gradient evaluated twice at the same point", 0,
                                         self.device)


def prepare(train_loss, params0, meta, stats, hvp, kernel, progress):
    """Check the arguments every PyTorch training call shares; returns ``(Prepared, progress)``."""
    validate.function(train_loss, "train_loss", " train_loss(params, meta, t) -> scalar tensor")
    stats = validate.stats_dict(stats)
    tree = TensorTree(params0, "params0")
    meta_tree = None if meta is None else TensorTree(meta, "meta")
    meta_flat = None if meta is None else on_device(meta_tree.flatten(meta), tree.device, "meta")
    if not isinstance(kernel, str):
        raise TypeError(f"kernel must be a kernel name (a str); got {kernel!r}")
    progress = validate.flag(progress, "progress")
    validate.choice(hvp, "hvp", ("auto",) + LossDerivatives.MODES)
    derivs = LossDerivatives(train_loss, tree, meta_tree, hvp, stats)
    return Prepared(tree, meta_tree, tree.flatten(params0), meta_flat, derivs, stats), progress


def on_device(x, device, name):
    if x.device != device:
        raise ValueError(f"{name} is on {x.device} but params0 is on {device}; put them on one device")
    return x


def schedule_tensor(x, G, name, device, momentum=False):
    """``x`` as a float64 ``(T, G)`` tensor on ``device`` (differentiable when ``x`` is a tensor).

    Values are checked by :mod:`reversible.inputs` as for :func:`reversible.sgd`:
    real and finite, step sizes > 0, momenta in (0, 1] and above the quantum.
    """
    values = host_values(x) if isinstance(x, torch.Tensor) else x
    if momentum:
        checked = inputs.momentum_schedule(values, G, name)
    else:
        checked = inputs.schedule(values, G, name, 0.0, low_open=True, hint=inputs.ALPHA_HINT)
    if not isinstance(x, torch.Tensor):
        return torch.as_tensor(np.asarray(checked, dtype=np.float64), device=device)
    x = x.to(device=device, dtype=torch.float64)
    return x.reshape(-1, 1).expand(-1, G) if x.dim() == 1 else x


def host_values(x):
    """The values of a tensor as NumPy (a host copy for device tensors; half floats widened)."""
    values = x.detach().cpu()
    return values.double().numpy() if values.dtype in (torch.float16, torch.bfloat16) \
        else values.numpy()


def host_copy(x):
    """A contiguous float64 NumPy copy of a tensor's values (host; once per run)."""
    return np.ascontiguousarray(x.detach().to("cpu", torch.float64).numpy())


class CpuRun:
    """A registered method on CPU tensors: forward trains, ``backward(dw)`` returns cotangents."""

    def __init__(self, method, problem, options, stats):
        self.method, self.problem, self.options, self.stats = method, problem, options, stats
        self._backward = None

    def forward(self):
        t0 = time.perf_counter()
        w_T, self._backward = self.method.run(self.problem, self.stats, **self.options)
        if getattr(self.problem, "first_step_rounding", None) is not None:
            self.stats["first_step_rounding"] = self.problem.first_step_rounding
        self.stats.setdefault("forward_seconds", time.perf_counter() - t0)
        return as_tensor(np.array(w_T, dtype=np.float64))

    def backward(self, dw):
        try:
            cot = self._backward(as_numpy(dw.detach().to("cpu", torch.float64).contiguous()))
        except ReversibilityError as err:
            raise type(err)(determinism.with_advice(err, "cpu")) from err
        return {k: as_tensor(v) for k, v in cot.items() if v is not None}


class TrainingRun(torch.autograd.Function):
    """``w_T = run(*inputs)`` with ``inputs`` named by ``kinds``; backward is the reverse pass.

    ``run.forward()`` trains and returns the flat float64 ``w_T``;
    ``run.backward(dw_T)`` returns a dict of cotangents keyed by ``kinds``.
    """

    @staticmethod
    def forward(ctx, run, kinds, *tensors):
        ctx.run, ctx.kinds = run, kinds
        # shape, dtype and device of each input, for its cotangent (the tensors are not kept)
        ctx.like = [None if x is None else (x.shape, x.dtype, x.device) for x in tensors]
        return run.forward()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dw):
        run, needs = ctx.run, ctx.needs_input_grad[2:]
        wanted = [k for k, need in zip(ctx.kinds, needs) if need]
        run.method.check_sees(wanted)
        cot = run.backward(dw)
        out = [None, None]
        for name, need, x in zip(ctx.kinds, needs, ctx.like):
            c = cot.get(name)
            if not need or x is None:
                out.append(None)
            elif c is None:
                out.append(torch.zeros(x[0], dtype=x[1], device=x[2]))
            else:
                out.append(c.reshape(x[0]).to(device=x[2], dtype=x[1]))
        return tuple(out)


def straight_through_beta(x):
    """``reversible.effective_beta(x)`` in value, the identity in derivative (a torch tensor)."""
    eff = torch.as_tensor(effective_beta(host_copy(x)), device=x.device)
    return x + (eff - x.detach())


def needs_graph(*tensors):
    """Whether a reference loop must record a graph (grad mode on, some input requires grad)."""
    return torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in tensors)


def unrolled_gradient(derivs, w, meta_container, t, differentiable):
    """The training loss's gradient at the flat ``w`` (a graph node when ``differentiable``)."""
    w_in = w if w.requires_grad else w.detach().requires_grad_()
    with torch.enable_grad():
        loss = derivs.train_loss(derivs.tree.unflatten(w_in), meta_container, t)
        loss = determinism.check_loss_value(loss, t)
        (g,) = torch.autograd.grad(loss, w_in, create_graph=differentiable)
    if not bool(torch.isfinite(g).all()):
        raise NonFiniteError(f"gradient at step {t} contains NaN or Inf: lower the learning rate "
                             "or check the loss for log(0) / overflow")
    return g
