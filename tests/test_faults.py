"""Fault injection: every fault is detected and named, never silent."""

import numpy as np
import pytest


# --- PyTorch front end (torch) ---

def _torch_or_skip():
    torch = pytest.importorskip("torch")
    rt = pytest.importorskip("reversible.torch")
    return torch, rt


def test_torch_fault_dataset_mutated_between_forward_and_reverse():
    """A training set edited after training (an in-place augmentation) fails the reversal."""
    torch, rt = _torch_or_skip()
    from reversible import ReversibilityError
    data = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(4, 3)

    def loss(w, meta, t):
        return ((data[t % 4] - w) ** 2).sum()

    alphas = torch.full((8,), 0.2, dtype=torch.float64, requires_grad=True)
    wT = rt.sgd(loss, torch.zeros(3, dtype=torch.float64), alphas, torch.full((8,), 0.7))
    data.mul_(1.0 + 1e-9)                                   # the fault
    with pytest.raises(ReversibilityError, match="did not return to the starting point"):
        torch.autograd.grad(wT.sum(), alphas)


def test_torch_fault_nan_hessian_vector_product_named_with_step():
    """A loss whose gradient is finite but whose curvature is not at one step."""
    torch, rt = _torch_or_skip()
    from reversible import NonFiniteError

    class Kink(torch.autograd.Function):       # gradient finite, its derivative NaN at step 2
        @staticmethod
        def forward(ctx, x, t):
            ctx.save_for_backward(x)
            ctx.t = t
            return (x ** 2).sum()

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * 2 * x * _Nan.apply(x, ctx.t), None

    class _Nan(torch.autograd.Function):       # identity 1, derivative NaN at step 2
        @staticmethod
        def forward(ctx, x, t):
            ctx.t = t
            return torch.ones_like(x)

        @staticmethod
        def backward(ctx, g):
            return g * (float("nan") if ctx.t == 2 else 0.0), None

    def loss(w, meta, t):
        return Kink.apply(w, t)

    alphas = torch.full((4,), 0.1, dtype=torch.float64, requires_grad=True)
    wT = rt.sgd(loss, torch.ones(3, dtype=torch.float64), alphas, torch.full((4,), 0.5),
                hvp="double")
    with pytest.raises(NonFiniteError, match="Hessian-vector product at step 2"):
        torch.autograd.grad(wT.sum(), alphas)


def test_torch_fault_nan_cotangent_of_the_result():
    torch, rt = _torch_or_skip()
    from reversible import NonFiniteError
    alphas = torch.full((3,), 0.1, dtype=torch.float64, requires_grad=True)
    wT = rt.sgd(lambda w, m, t: (w ** 2).sum(), torch.ones(2, dtype=torch.float64), alphas,
                torch.full((3,), 0.5))
    with pytest.raises(NonFiniteError, match="cotangent of w_T"):
        torch.autograd.grad(wT, alphas, torch.tensor([float("nan"), 1.0], dtype=torch.float64))


def test_torch_fault_second_backward_gives_the_same_hypergradient():
    """The forward state is kept: a retained graph can be reversed twice, bit for bit alike."""
    torch, rt = _torch_or_skip()
    alphas = torch.full((5,), 0.1, dtype=torch.float64, requires_grad=True)
    wT = rt.sgd(lambda w, m, t: ((w - t) ** 2).sum(), torch.ones(2, dtype=torch.float64), alphas,
                torch.full((5,), 0.6))
    first = torch.autograd.grad(wT.sum(), alphas, retain_graph=True)[0]
    second = torch.autograd.grad(wT.sum(), alphas)[0]
    assert torch.equal(first, second)
    assert float(first.abs().min()) > 0


def test_torch_fault_loss_raising_midway_propagates_unchanged():
    torch, rt = _torch_or_skip()

    def loss(w, meta, t):
        if t == 3:
            raise KeyError("batch 3 missing")
        return (w ** 2).sum()

    with pytest.raises(KeyError, match="batch 3 missing"):
        rt.sgd(loss, torch.ones(2, dtype=torch.float64), torch.full((5,), 0.1), torch.full((5,), 0.5))
