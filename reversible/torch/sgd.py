"""``reversible.torch.sgd``: exact hypergradients of SGD with momentum for PyTorch models.

The training run is one ``torch.autograd.Function``: its forward trains (on
the engine for the parameters' device) and its backward is the chosen
hypergradient method's reverse pass, so ``torch.autograd.grad`` of anything
computed from ``params_T`` reaches ``params0``, ``v0``, ``alphas``, ``betas``
and ``meta`` through whatever parameterisation the user applied.
``method="unrolled"`` is PyTorch differentiating the float64 loop itself: the
reference the others are checked against.
"""

import inspect
import time

import numpy as np
import torch

from .. import inputs, methods, validate
from ..api import FIXED_POINT_METHODS
from ..buffer import effective_beta
from ..errors import NonFiniteError, ReversibilityError
from ..fixedpoint import DEFAULT_FRAC_BITS, check_frac_bits
from ..trajectory import Schedule
from . import determinism
from .derivatives import LossDerivatives
from .problem import TorchProblem, as_numpy, as_tensor
from .tree import TensorTree

# methods that need more than gradients and Hessian-vector products
_NEEDS_MIXED_JVP = ("forward",)


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
    validate.function(train_loss, "train_loss", " train_loss(params, meta, t) -> scalar tensor")
    stats = validate.stats_dict(stats)
    tree = TensorTree(params0, "params0")
    device = tree.device
    G = tree.num_groups
    w0 = tree.flatten(params0)
    v0_flat = torch.zeros(tree.size, dtype=torch.float64, device=device) if v0 is None \
        else _on(tree.flatten(v0, "v0"), device, "v0")
    alphas2 = _schedule(alphas, G, "alphas", device)
    betas2 = _schedule(betas, G, "betas", device)
    T = inputs.same_steps(alphas=alphas2, betas=betas2)
    schedule = Schedule.build(_numpy(alphas2), _numpy(betas2), tree.group_index(), G)
    meta_tree = None if meta is None else TensorTree(meta, "meta")
    meta_flat = None if meta is None else _on(meta_tree.flatten(meta), device, "meta")
    frac_bits = check_frac_bits(DEFAULT_FRAC_BITS if frac_bits is None else frac_bits)
    if not isinstance(kernel, str):
        raise TypeError(f"kernel must be a kernel name (a str); got {kernel!r}")
    progress = validate.flag(progress, "progress")
    validate.choice(hvp, "hvp", ("auto",) + LossDerivatives.MODES)
    stats.update(method=method, T=T, N=tree.size, groups=G, frac_bits=frac_bits,
                 device=str(device), hvp=hvp)
    derivs = LossDerivatives(train_loss, tree, meta_tree, hvp, stats)

    on_gpu = device.type == "cuda" or gpu_backend is not None
    m = _method(method, options, on_gpu, meta is not None)

    w0_value = w0.detach()
    meta_value = None if meta_flat is None else meta_flat.detach()
    derivs.loss_value(w0_value, meta_value, 0)
    if check_determinism:
        determinism.check_repeatable(derivs.grad(w0_value, meta_value, 0),
                                     derivs.grad(w0_value, meta_value, 0),
                                     "the gradient evaluated twice at the same point", 0, device)

    if method == "unrolled":
        t0 = time.perf_counter()
        w_T = unrolled(derivs, w0, v0_flat, alphas2, betas2, meta_flat, tree.group_index())
        stats["forward_seconds"] = time.perf_counter() - t0
        return tree.unflatten(w_T)
    if on_gpu:
        from .cuda import CudaRun
        run = CudaRun(derivs, w0_value, v0_flat.detach(), schedule, _numpy(betas2),
                      meta_value, frac_bits, tree.group_index(), stats, options.get("check", True),
                      check_every, progress, gpu_backend)
    else:
        problem = TorchProblem(None, as_numpy(w0_value), as_numpy(v0_flat.detach()),
                               schedule.alphas, _numpy(betas2),
                               None if meta_value is None else as_numpy(meta_value),
                               tree.group_index(), frac_bits, kernel, progress, hvp,
                               check_resolution=method in FIXED_POINT_METHODS,
                               derivatives=derivs)
        run = CpuRun(m, problem, options, stats)
    w_T = _TrainingRun.apply(run, w0, v0_flat, alphas2, betas2, meta_flat)
    return tree.unflatten(w_T)


def _method(name, options, on_gpu, has_meta):
    """The registered method ``name``, checked to work here with these ``options``."""
    m = methods.get(name)                           # unknown names: ValueError listing them
    if name == "unrolled":
        _check_options(name, options, [])
        return m
    if on_gpu and name != "exact":
        raise ValueError(f"method {name!r} runs on CPU tensors only; on CUDA use method='exact' "
                         "(or 'unrolled' for the stored-trajectory reference), or move the model "
                         "to the CPU")
    if m.traced:
        raise ValueError(f"method {name!r} differentiates the training loop with autograd "
                         "(NumPy); for PyTorch use method='unrolled'")
    if name in _NEEDS_MIXED_JVP and has_meta:
        raise ValueError(f"method {name!r} needs mixed Jacobian-vector products along meta, "
                         "which reversible.torch does not supply; use method='exact' (or "
                         "'checkpointed' for a float64 reference)")
    _check_options(name, options, ["check"] if on_gpu else _option_names(m))
    return m


class CpuRun:
    """A registered method on CPU tensors: forward trains, ``backward(dw)`` returns cotangents."""

    def __init__(self, method, problem, options, stats):
        self.method, self.problem, self.options, self.stats = method, problem, options, stats
        self.name, self.blind_to = method.name, method.blind_to
        self._backward = None

    def forward(self):
        t0 = time.perf_counter()
        w_T, self._backward = self.method.run(self.problem, self.stats, **self.options)
        if self.problem.first_step_rounding is not None:
            self.stats["first_step_rounding"] = self.problem.first_step_rounding
        self.stats.setdefault("forward_seconds", time.perf_counter() - t0)
        return as_tensor(np.array(w_T, dtype=np.float64))

    def backward(self, dw):
        try:
            cot = self._backward(as_numpy(dw.detach().to("cpu", torch.float64).contiguous()))
        except ReversibilityError as err:
            raise type(err)(determinism.with_advice(err, "cpu")) from err
        return {k: as_tensor(v) for k, v in cot.items() if v is not None}


class _TrainingRun(torch.autograd.Function):
    """``w_T = run(w0, v0, alphas, betas, meta)``; the backward is the run's reverse pass."""

    @staticmethod
    def forward(ctx, run, w0, v0, alphas, betas, meta):
        ctx.run = run
        # shape, dtype and device of each input, for its cotangent (the tensors are not kept)
        ctx.like = [None if x is None else (x.shape, x.dtype, x.device)
                    for x in (w0, v0, alphas, betas, meta)]
        return run.forward()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dw):
        run, like = ctx.run, ctx.like
        wanted = [n for n, need in zip(methods.HYPER_KINDS, ctx.needs_input_grad[1:]) if need]
        blind = [n for n in wanted if n in run.blind_to]
        if blind and len(blind) == len(wanted):
            raise ValueError(
                f"method {run.name!r} cannot see {', '.join(blind)}: its hypergradient with "
                "respect to them is zero by construction. Use method='exact' for these, or also "
                "differentiate with respect to a hyperparameter it does see")
        cot = run.backward(dw)
        out = [None]
        for name, need, x in zip(methods.HYPER_KINDS, ctx.needs_input_grad[1:], like):
            c = cot.get(name)
            if not need or x is None:
                out.append(None)
            elif c is None:
                out.append(torch.zeros(x[0], dtype=x[1], device=x[2]))
            else:
                out.append(c.reshape(x[0]).to(device=x[2], dtype=x[1]))
        return tuple(out)


def unrolled(derivs, w0, v0, alphas2, betas2, meta, group_index):
    """PyTorch differentiating the float64 training loop (stores the trajectory: O(T N) memory).

    Momenta are the engine's effective betas with a straight-through
    derivative, so this trains the same model as ``exact``.
    """
    tree, meta_tree = derivs.tree, derivs.meta_tree
    eff = torch.as_tensor(effective_beta(as_numpy(betas2.detach().cpu())), device=betas2.device)
    betas_eff = betas2 + (eff - betas2.detach())
    gi = torch.as_tensor(group_index, device=w0.device)
    differentiable = torch.is_grad_enabled() and any(
        x is not None and x.requires_grad for x in (w0, v0, alphas2, betas2, meta))
    m = None if meta is None else meta_tree.unflatten(meta)
    w, v = w0, v0
    with torch.enable_grad():
        for t in range(alphas2.shape[0]):
            w_in = w if w.requires_grad else w.detach().requires_grad_()
            loss = determinism.check_loss_value(derivs.train_loss(tree.unflatten(w_in), m, t), t)
            (g,) = torch.autograd.grad(loss, w_in, create_graph=differentiable)
            if not bool(torch.isfinite(g).all()):
                raise NonFiniteError(f"gradient at step {t} contains NaN or Inf: lower the "
                                     "learning rate or check the loss for log(0) / overflow")
            beta = betas_eff[t][gi]
            v = beta * v - (1.0 - beta) * g
            w = w + alphas2[t][gi] * v
    return w if differentiable else w.detach()


def _on(x, device, name):
    if x.device != device:
        raise ValueError(f"{name} is on {x.device} but params0 is on {device}; put them on one device")
    return x


def _schedule(x, G, name, device):
    """``x`` as a float64 ``(T, G)`` tensor on ``device`` (differentiable when ``x`` is a tensor).

    Values are checked by :mod:`reversible.inputs` as for :func:`reversible.sgd`:
    real and finite, step sizes > 0, momenta in (0, 1] and above the quantum.
    """
    if isinstance(x, torch.Tensor):
        values = x.detach().cpu()
        values = values.double().numpy() if values.dtype in (torch.float16, torch.bfloat16) \
            else values.numpy()
    else:
        values = x
    if name == "betas":
        checked = inputs.momentum_schedule(values, G, name)
    else:
        checked = inputs.schedule(values, G, name, 0.0, low_open=True, hint=inputs.ALPHA_HINT)
    if not isinstance(x, torch.Tensor):
        return torch.as_tensor(np.asarray(checked, dtype=np.float64), device=device)
    x = x.to(device=device, dtype=torch.float64)
    return x.reshape(-1, 1).expand(-1, G) if x.dim() == 1 else x


def _numpy(x):
    """A contiguous float64 NumPy copy of a (T, G) tensor's values (host; once per run)."""
    return np.ascontiguousarray(x.detach().to("cpu", torch.float64).numpy())


def _option_names(method):
    params = inspect.signature(method.run).parameters
    fixed = {"problem", "stats", "w0", "v0", "alphas", "betas", "meta"}
    return [name for name in params if name not in fixed]


def _check_options(name, options, allowed):
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"method {name!r} does not take option(s) {unknown}; its options are "
                         f"{allowed or 'none'}")
