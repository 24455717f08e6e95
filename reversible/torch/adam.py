"""``reversible.torch.adam``: exact hypergradients of Adam / AdamW for PyTorch models.

The update rule, its exact reverse pass and the float methods are the
library's (:mod:`reversible.adam_rule`, :mod:`reversible.methods`); this
module hands them the PyTorch loss's derivatives as an
:class:`~reversible.adam_api.AdamProblem` and wraps the run in the same
``torch.autograd.Function`` as :func:`reversible.torch.sgd`.
``method="unrolled"`` is PyTorch differentiating the float64 Adam loop.
"""

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import inputs
from ..adam_api import ADAM_METHODS, AdamProblem
from ..adam_rule import AdamFormat
from .problem import TorchDerivatives, as_numpy
from .sgd import AUTOGRAD_ONLY, method_for_device
from .training import (CpuRun, TrainingRun, host_copy, host_values, needs_graph,
                       prepare, schedule_tensor, straight_through_beta,
                       unrolled_gradient)

KINDS = ("w0", "alphas", "beta1s", "beta2s", "eps", "weight_decay", "meta")


@dataclass
class TorchAdamProblem(TorchDerivatives, AdamProblem):
    """An Adam problem on CPU vectors whose derivatives run a PyTorch loss."""

    derivatives: object = field(default=None, repr=False)


def adam(train_loss, params0, alphas, beta1s, beta2s, meta=None, *, eps=1e-8, weight_decay=0.0,
         method="exact", frac_bits=None, stats=None, kernel="auto", progress=False, hvp="auto",
         check_determinism=True, check_every=256, gpu_backend=None, **options):
    """Train ``params0`` for ``T = len(alphas)`` steps of Adam (AdamW with ``weight_decay``).

    The contract of :func:`reversible.adam` (PyTorch's update rule, bias
    corrections, decoupled decay; ``alphas``, ``beta1s``, ``beta2s`` of shape
    ``(T,)`` or ``(T, G)``, ``eps`` a scalar or one per group,
    ``weight_decay`` a scalar, one per group or ``(T, G)``) with the PyTorch
    conventions of :func:`reversible.torch.sgd`: ``train_loss(params, meta, t)``
    written with torch ops, tensors in and a differentiable ``params_T`` out,
    whose backward gives hypergradients with respect to ``params0``,
    ``alphas``, ``beta1s``, ``beta2s``, ``eps``, ``weight_decay`` and ``meta``.
    Methods: ``"exact"``, ``"unrolled"`` (the PyTorch reference) and, on CPU
    tensors, ``"checkpointed"``, ``"truncated"`` and ``"drmad"``.  CUDA
    tensors train exactly on the CuPy kernels of :func:`reversible.gpu.adam`
    (``method="exact"``, the default) or take ``"unrolled"``; there the
    engine's error flags are read every ``check_every`` steps, and
    ``gpu_backend`` (tests) runs that path on :func:`reversible.gpu.emulate.backend`.
    """
    prep, progress = prepare(train_loss, params0, meta, stats, hvp, kernel, progress)
    tree, device, stats = prep.tree, prep.device, prep.stats
    G = tree.num_groups
    alphas2 = schedule_tensor(alphas, G, "alphas", device)
    b1 = schedule_tensor(beta1s, G, "beta1s", device, momentum=True)
    b2 = schedule_tensor(beta2s, G, "beta2s", device, momentum=True)
    T = inputs.same_steps(alphas=alphas2, beta1s=b1, beta2s=b2)
    eps_g = _per_group(eps, G, "eps", device)
    wd2 = _decay_rows(weight_decay, G, T, device)
    AdamFormat.parse(frac_bits, G)                  # validates before any training
    on_gpu = device.type == "cuda" or gpu_backend is not None
    m = _method(method, options, on_gpu)
    stats.update(method=method, rule="adam", T=T, N=tree.size, groups=G, device=str(device),
                 hvp=prep.derivs.hvp)
    prep.check_step0(check_determinism)

    if method == "unrolled":
        t0 = time.perf_counter()
        w_T = unrolled(prep, alphas2, b1, b2, eps_g, wd2)
        stats["forward_seconds"] = time.perf_counter() - t0
        return tree.unflatten(w_T)
    meta_value = prep.meta_value
    if on_gpu:
        from .cuda import CudaRun, gpu_module

        def start(grad, vjp, grad_hvp):
            return gpu_module().adam(
                grad, prep.w0_value, host_copy(alphas2), host_copy(b1), host_copy(b2), meta_value,
                vjp=vjp, grad_hvp=grad_hvp, eps=host_copy(eps_g), weight_decay=host_copy(wd2),
                frac_bits=frac_bits, group_index=tree.group_index() if G > 1 else None,
                stats=stats, check_every=check_every, progress=progress, backend=gpu_backend)

        run = CudaRun(prep.derivs, start, device, options.get("check", True), gpu_backend)
        w_T = TrainingRun.apply(run, KINDS, prep.w0, alphas2, b1, b2, eps_g, wd2, prep.meta)
        return tree.unflatten(w_T)
    problem = TorchAdamProblem(
        None, as_numpy(prep.w0_value), None, host_copy(alphas2), host_copy(b1),
        None if meta_value is None else as_numpy(meta_value), tree.group_index(), frac_bits,
        kernel, progress, prep.derivs.hvp, beta2s=host_copy(b2), eps=host_copy(eps_g),
        weight_decay=host_copy(wd2), derivatives=prep.derivs)
    problem.schedule()                              # validates the schedules before training
    run = CpuRun(m, problem, options, stats)
    w_T = TrainingRun.apply(run, KINDS, prep.w0, alphas2, b1, b2, eps_g, wd2, prep.meta)
    return tree.unflatten(w_T)


def _method(name, options, on_gpu):
    """The registered method ``name`` for Adam, checked to work here with these ``options``."""
    if name not in ADAM_METHODS or name in AUTOGRAD_ONLY:
        raise ValueError(f"method {name!r} does not support Adam with PyTorch; choose one of "
                         f"{[m for m in ADAM_METHODS if m not in AUTOGRAD_ONLY]}")
    return method_for_device(name, options, on_gpu)


def unrolled(prep, alphas2, beta1s, beta2s, eps, weight_decay):
    """PyTorch differentiating the float64 Adam loop (the update of :mod:`reversible.adam_rule`).

    Betas and the decay factor are applied as the engine applies them
    (:func:`reversible.effective_beta`, straight-through derivative).
    """
    b1, b2 = straight_through_beta(beta1s), straight_through_beta(beta2s)
    decay = straight_through_beta(1.0 - alphas2 * weight_decay)
    c1, c2 = 1.0 - torch.cumprod(b1, 0), 1.0 - torch.cumprod(b2, 0)
    gi = torch.as_tensor(prep.tree.group_index(), device=prep.device)
    differentiable = needs_graph(prep.w0, alphas2, beta1s, beta2s, eps, weight_decay, prep.meta)
    meta = None if prep.meta is None else prep.meta_tree.unflatten(prep.meta)
    w = prep.w0
    m = s = torch.zeros_like(prep.w0_value)
    with torch.enable_grad():
        for t in range(alphas2.shape[0]):
            g = unrolled_gradient(prep.derivs, w, meta, t, differentiable)
            m = b1[t][gi] * m + (1.0 - b1[t][gi]) * g
            s = b2[t][gi] * s + (1.0 - b2[t][gi]) * (g * g)
            step = alphas2[t][gi] * (m / c1[t][gi]) / (_sqrt0(s / c2[t][gi]) + eps[gi])
            w = decay[t][gi] * w - step
    return w if differentiable else w.detach()


def _sqrt0(x):
    """``sqrt(x)`` with derivative 0 (not inf) at 0, as :func:`reversible.adam_rule.sqrt0`."""
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), 0.0)


def _per_group(x, G, name, device):
    """A positive scalar or one value per group as a float64 ``(G,)`` tensor."""
    val = inputs.per_group_values(host_values(x) if isinstance(x, torch.Tensor) else x, G, name)
    t = x.to(device, torch.float64) if isinstance(x, torch.Tensor) else \
        torch.as_tensor(np.asarray(val, dtype=np.float64), device=device)
    return t.expand(G) if t.dim() == 0 else t


def _decay_rows(x, G, T, device):
    """AdamW's decay (scalar, per group or ``(T, G)``, each >= 0) as a float64 ``(T, G)`` tensor."""
    val = inputs.decay_values(host_values(x) if isinstance(x, torch.Tensor) else x, G, T)
    t = x.to(device, torch.float64) if isinstance(x, torch.Tensor) else \
        torch.as_tensor(np.asarray(val, dtype=np.float64), device=device)
    return t.expand(T, G) if t.dim() < 2 else t
