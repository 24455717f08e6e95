"""``reversible.torch.sgd``: exact hypergradients of SGD with momentum for PyTorch models.

The training run is one ``torch.autograd.Function``
(:class:`~reversible.torch.training.TrainingRun`): its forward trains (on the
engine for the parameters' device) and its backward is the chosen
hypergradient method's reverse pass, so ``torch.autograd.grad`` of anything
computed from ``params_T`` reaches ``params0``, ``v0``, ``alphas``, ``betas``
and ``meta`` through whatever parameterisation the user applied.
``method="unrolled"`` is PyTorch differentiating the float64 loop itself: the
reference the others are checked against.
"""

import time

import torch

from .. import inputs, methods
from ..api import FIXED_POINT_METHODS
from ..buffer import effective_beta
from ..fixedpoint import DEFAULT_FRAC_BITS, check_frac_bits
from ..resolution import check_first_step
from ..trajectory import Schedule
from .problem import TorchProblem, as_numpy
from .training import (CpuRun, TrainingRun, host_copy, needs_graph,
                       prepare, schedule_tensor, straight_through_beta, unrolled_gradient)

# methods that differentiate the update with autograd (NumPy), not through the Problem's callables
AUTOGRAD_ONLY = ("forward",)


def sgd(train_loss, params0, alphas, betas, meta=None, *, v0=None, method="exact", frac_bits=None,
        stats=None, kernel="auto", progress=False, hvp="auto", check_determinism=True,
        check_every=256, gpu_backend=None, **options):
    """Train ``params0`` for ``T = len(alphas)`` steps of SGD with momentum; return ``params_T``.

    ``train_loss(params, meta, t)`` returns a scalar tensor computed with torch
    ops from ``params`` (a container like ``params0``, typically passed to
    ``torch.func.functional_call(model, params, (x,))``) on the minibatch of
    step ``t``; it must be deterministic in ``(params, meta, t)``.  ``params0``
    is a tensor or a dict / list / tuple of tensors, one parameter group per
    tensor; ``params_T`` has the same structure and dtypes.  ``alphas`` and
    ``betas`` have shape ``(T,)`` (shared) or ``(T, G)`` (per group); ``meta``
    is a tensor or container of tensors (or None).  Update rule:
    ``v <- beta v - (1 - beta) g``, ``w <- w + alpha v``.

    ``params_T`` is differentiable: backpropagating from any function of it
    gives hypergradients with respect to ``params0``, ``v0``, ``alphas``,
    ``betas`` and ``meta`` by ``method`` (``"exact"``, ``"unrolled"``, or an
    approximate method of :mod:`reversible.methods` on CPU tensors).
    Parameters on a CUDA device train on the CuPy kernels of
    :mod:`reversible.gpu` (``method="exact"`` or ``"unrolled"``).

    ``hvp`` picks the Hessian-vector product: ``"forward"`` (``torch.func``
    forward-over-reverse), ``"reverse"`` (``torch.func`` reverse-over-reverse),
    ``"double"`` (``torch.autograd.grad`` twice) or ``"auto"`` (the fastest of
    them, timed on the first reverse steps).  With
    ``check_determinism`` the gradient at step 0 is evaluated twice and must
    agree bit for bit.  ``stats``, if a dict, receives timings and buffer
    figures.  ``options`` go to the method (e.g. ``K`` for ``"truncated"``,
    ``check=False`` to skip the reversal check of ``"exact"``).  On CUDA the
    engine's error flag is read every ``check_every`` steps; ``gpu_backend``
    (tests) runs that path on :func:`reversible.gpu.emulate.backend`.
    """
    prep, progress = prepare(train_loss, params0, meta, stats, hvp, kernel, progress)
    tree, device, stats = prep.tree, prep.device, prep.stats
    G = tree.num_groups
    v0_flat = torch.zeros(tree.size, dtype=torch.float64, device=device) if v0 is None \
        else prep.flat_like_params(v0, "v0")
    alphas2 = schedule_tensor(alphas, G, "alphas", device)
    betas2 = schedule_tensor(betas, G, "betas", device, momentum=True)
    T = inputs.same_steps(alphas=alphas2, betas=betas2)
    schedule = Schedule.build(host_copy(alphas2), host_copy(betas2), tree.group_index(), G)
    frac_bits = check_frac_bits(DEFAULT_FRAC_BITS if frac_bits is None else frac_bits)
    on_gpu = device.type == "cuda" or gpu_backend is not None
    m = method_for_device(method, options, on_gpu)
    stats.update(method=method, T=T, N=tree.size, groups=G, frac_bits=frac_bits,
                 device=str(device), hvp=prep.derivs.hvp)
    prep.check_step0(check_determinism)

    if method == "unrolled":
        t0 = time.perf_counter()
        w_T = unrolled(prep, v0_flat, alphas2, betas2)
        stats["forward_seconds"] = time.perf_counter() - t0
        return tree.unflatten(w_T)
    if on_gpu:
        from .cuda import CudaRun, gpu_module
        gi, betas_host = tree.group_index(), host_copy(betas2)

        def start(grad, vjp, grad_hvp):
            return gpu_module().sgd(
                grad, prep.w0_value, schedule.alphas, betas_host, prep.meta_value, vjp=vjp,
                v0=v0_flat.detach(), frac_bits=frac_bits, group_index=gi if G > 1 else None,
                stats=stats, check_every=check_every, progress=progress, backend=gpu_backend)

        def first_gradient(g):
            # once, on the host: is frac_bits fine enough for step 0's increments?
            beta = effective_beta(betas_host[0])[gi]
            stats["first_step_rounding"] = check_first_step(
                g.detach().cpu().numpy(), schedule.alphas[0][gi], 1.0 - beta, frac_bits)

        run = CudaRun(prep.derivs, start, device, options.get("check", True), gpu_backend,
                      first_gradient)
    else:
        meta_value = prep.meta_value
        problem = TorchProblem(None, as_numpy(prep.w0_value), as_numpy(v0_flat.detach()),
                               schedule.alphas, host_copy(betas2),
                               None if meta_value is None else as_numpy(meta_value),
                               tree.group_index(), frac_bits, kernel, progress, prep.derivs.hvp,
                               check_resolution=method in FIXED_POINT_METHODS,
                               derivatives=prep.derivs)
        run = CpuRun(m, problem, options, stats)
    w_T = TrainingRun.apply(run, methods.HYPER_KINDS, prep.w0, v0_flat, alphas2, betas2, prep.meta)
    return tree.unflatten(w_T)


def method_for_device(name, options, on_gpu):
    """The registered method ``name``, checked to work here (CPU or CUDA tensors) with these
    ``options`` (shared by :func:`sgd` and :func:`reversible.torch.adam`)."""
    m = methods.get(name)                           # unknown names: ValueError listing them
    if name == "unrolled":
        methods.check_options(name, options, [])
        return m
    if on_gpu and name != "exact":
        raise ValueError(f"method {name!r} runs on CPU tensors only; on CUDA use method='exact' "
                         "(or 'unrolled' for the stored-trajectory reference), or move the model "
                         "to the CPU")
    if m.traced or name in AUTOGRAD_ONLY:
        raise ValueError(f"method {name!r} differentiates the training loop with autograd "
                         "(NumPy), which cannot see a PyTorch loss; use method='exact' or "
                         "'unrolled' (or 'checkpointed' for a float64 reference)")
    methods.check_options(name, options, ["check"] if on_gpu else m.option_names())
    return m


def unrolled(prep, v0, alphas2, betas2):
    """PyTorch differentiating the float64 training loop (stores the trajectory: O(T N) memory).

    Momenta are the engine's effective betas with a straight-through
    derivative, so this trains the same model as ``exact``.
    """
    betas_eff = straight_through_beta(betas2)
    gi = torch.as_tensor(prep.tree.group_index(), device=prep.device)
    differentiable = needs_graph(prep.w0, v0, alphas2, betas2, prep.meta)
    m = None if prep.meta is None else prep.meta_tree.unflatten(prep.meta)
    w, v = prep.w0, v0
    with torch.enable_grad():
        for t in range(alphas2.shape[0]):
            g = unrolled_gradient(prep.derivs, w, m, t, differentiable)
            beta = betas_eff[t][gi]
            v = beta * v - (1.0 - beta) * g
            w = w + alphas2[t][gi] * v
    return w if differentiable else w.detach()
