"""Deterministic losses: the checks and the messages of the PyTorch front end.

Exact reversal recomputes every gradient in the reverse pass and needs the
same bits as in the forward pass.  PyTorch losses break that in a few known
ways: random ops drawn from the global generator (dropout), and on CUDA
non-deterministic kernels (atomics in scatter / index_add, cuDNN's
convolution algorithms chosen by benchmarking, cuBLAS workspaces).  This
module detects them (the gradient evaluated twice at the same point, and the
reversal check at the end) and builds the message that names the fix.
"""

import os

import torch

from ..errors import NonFiniteError, ReversibilityError

DRAW_FROM_T = ("draw minibatches and any randomness (dropout masks) from the step index t, e.g. "
               "torch.Generator().manual_seed(seed * 100003 + t), never from the global generator")


def settings_advice(device):
    """The settings that make PyTorch deterministic, with the ones currently missing first."""
    missing = []
    if not torch.are_deterministic_algorithms_enabled():
        missing.append("torch.use_deterministic_algorithms(True)")
    if getattr(device, "type", str(device)) == "cuda":
        if not torch.backends.cudnn.deterministic:
            missing.append("torch.backends.cudnn.deterministic = True")
        if torch.backends.cudnn.benchmark:
            missing.append("torch.backends.cudnn.benchmark = False")
        if os.environ.get("CUBLAS_WORKSPACE_CONFIG") not in (":4096:8", ":16:8"):
            missing.append("CUBLAS_WORKSPACE_CONFIG=:4096:8 in the environment before CUDA starts")
    if not missing:
        return "the deterministic-algorithm settings are already on; " + DRAW_FROM_T
    return "set " + "; ".join(missing) + "; and " + DRAW_FROM_T


def nondeterministic_message(what, t, device, differing, total):
    return (f"the training loss is not deterministic: {what} at step {t} gave different bits "
            f"({differing} of {total} entries differ), so training cannot be reversed exactly. "
            + settings_advice(device))


def check_repeatable(first, second, what, t, device):
    """Raise :class:`ReversibilityError` when two evaluations at the same point differ in any bit."""
    if not torch.equal(first, second):
        differing = int((first != second).sum())
        raise ReversibilityError(nondeterministic_message(what, t, device, differing, first.numel()))


def not_reversed_advice(device):
    """What to tell the user when a reverse pass did not return to the starting point."""
    return ("With PyTorch this usually means the gradient is not a deterministic function of "
            "(params, meta, t): " + settings_advice(device))


def with_advice(err, device):
    """The message of a failed reversal followed by what PyTorch users should check."""
    return f"{str(err).rstrip('. ')}. {not_reversed_advice(device)}"


def check_loss_value(value, t):
    """The loss must be a finite real scalar tensor; returns it."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"train_loss must return a torch tensor (a scalar); got "
                        f"{type(value).__name__} at step {t}")
    if value.numel() != 1:
        raise ValueError(f"train_loss must return a scalar; got shape {tuple(value.shape)} at "
                         f"step {t} (reduce it with .mean() or .sum())")
    if not value.is_floating_point():
        raise TypeError(f"train_loss must return a floating-point scalar; got {value.dtype} at step {t}")
    if not bool(torch.isfinite(value)):
        raise NonFiniteError(f"the training loss is {float(value.detach())} at step {t}: lower the learning "
                             "rate or check the loss for log(0) / overflow")
    return value


def is_missing_forward_rule(err):
    """Whether ``err`` says an operation lacks forward-mode AD (then reverse-over-reverse works)."""
    if isinstance(err, NotImplementedError):
        return True
    text = str(err).lower()
    return "forward ad" in text or "forward-mode" in text or "forward mode" in text \
        or "jvp" in text or "not implemented" in text
