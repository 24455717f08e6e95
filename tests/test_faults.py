"""Fault injection: each test injects one real fault and asserts a loud, specific outcome with
nothing lost.  One section per helper; each section names the categories it covers."""

import warnings

import autograd.numpy as anp
import numpy as np
import pytest

import reversible

# --- inputs to reversible.sgd (frontend) ---
#
# complex inputs (w0, v0, alphas, betas, meta, a leaf inside a container): TypeError naming it;
# wrong kinds of sgd's own arguments (stats=[], progress="yes", kernel=3, a loss that is not
#   callable, text or boolean arrays): TypeError naming the argument;
# NaN / Inf / non-positive step sizes and momenta outside (0, 1] or below the quantum:
#   ValueError naming the argument, step and group;
# frac_bits too coarse for the increments: refused (hopeless) or ResolutionWarning (coarse),
#   each naming the frac_bits that would do.
# Every refused call leaves the caller's arrays and stats dict untouched.

from reversible.buffer import BETA_ONE  # noqa: E402
from reversible.errors import ResolutionWarning  # noqa: E402

_rng = np.random.default_rng(0)
_X, _Y = _rng.normal(size=(30, 4)), _rng.normal(size=30)
_T = 12


def _loss(w, meta, t):
    w = anp.concatenate([anp.ravel(x) for x in w.values()]) if isinstance(w, dict) else w
    r = (5 * t + np.arange(8)) % 30
    out = anp.mean((anp.dot(_X[r], w) - _Y[r]) ** 2)
    return out if meta is None else out + anp.exp(meta[0]) * anp.sum(w ** 2)


def _call(**changes):
    args = dict(train_loss=_loss, w0=0.3 * np.ones(4), alphas=np.full(_T, 0.05),
                betas=np.full(_T, 0.9), meta=None)
    args.update(changes)
    return reversible.sgd(args.pop("train_loss"), args.pop("w0"), args.pop("alphas"),
                          args.pop("betas"), args.pop("meta"), **args)


_TYPE_FAULTS = [
    (dict(w0=0.3 * np.ones(4) + 0j), "w0 is complex"),
    (dict(w0={"a": np.ones(2), "b": np.ones(2, np.complex128)}), r"w0\['b'\] is complex"),
    (dict(v0=np.ones(4) * 1j), "v0 is complex"),
    (dict(alphas=np.full(_T, 0.05 + 0.01j)), "alphas is complex"),
    (dict(betas=np.full(_T, 0.9 + 0j)), "betas is complex"),
    (dict(meta=np.array([0.1j])), "meta is complex"),
    (dict(w0=np.array(["0.1"] * 4)), "w0 must be a real float array"),
    (dict(alphas=np.ones(_T, bool)), "alphas must be a real float array"),
    (dict(stats=[]), "stats must be a dict"),
    (dict(stats="stats"), "stats must be a dict"),
    (dict(progress="no"), "progress must be True or False"),
    (dict(kernel=None), "kernel must be a kernel name"),
    (dict(train_loss=None), "train_loss must be a function"),
]


@pytest.mark.parametrize("changes, fragment", _TYPE_FAULTS)
def test_wrong_kind_of_value_is_a_type_error(changes, fragment):
    with pytest.raises(TypeError, match=fragment):
        _call(**changes)


_VALUE_FAULTS = [
    (dict(alphas=np.full(_T, np.nan)), "alphas contains NaN or Inf"),
    (dict(alphas=np.r_[np.full(_T - 1, 0.05), np.inf]), "alphas contains NaN or Inf"),
    (dict(alphas=np.r_[0.05, 0.0, np.full(_T - 2, 0.05)]), r"alphas must lie in \(0, inf\); got 0.0 at step 1"),
    (dict(alphas=np.full(_T, -0.05)), r"alphas must lie in \(0, inf\); got -0.05 at step 0"),
    (dict(betas=np.full(_T, np.nan)), "betas contains NaN or Inf"),
    (dict(betas=np.full(_T, 1.0 + 1e-9)), r"betas must lie in \(0, 1\]"),
    (dict(betas=np.zeros(_T)), r"betas must lie in \(0, 1\]"),
    (dict(betas=np.full(_T, 0.4 / BETA_ONE)), "rounds to zero"),
    (dict(w0=np.array([0.1, np.nan, 0.0, 0.0])), "w0 contains NaN or Inf"),
    (dict(meta=np.array([np.inf])), "meta contains NaN or Inf"),
    (dict(frac_bits=2.5), "frac_bits must be an integer"),
    (dict(frac_bits=True), "frac_bits must be an integer"),
    (dict(hvp="backward"), "hvp must be one of"),
    (dict(frac_bits=10), r"frac_bits=10 .*rounds the first step's increments"),
]


@pytest.mark.parametrize("changes, fragment", _VALUE_FAULTS)
def test_bad_value_is_a_value_error(changes, fragment):
    with pytest.raises(ValueError, match=fragment):
        _call(**changes)


def test_refused_call_leaves_inputs_and_stats_untouched():
    w0, alphas, stats = 0.3 * np.ones(4), np.full(_T, 0.05), {"mine": 1}
    copies = w0.copy(), alphas.copy()
    with pytest.raises(ValueError):
        _call(w0=w0, alphas=alphas, betas=np.full(_T, 1.5), stats=stats)
    assert stats == {"mine": 1}
    assert np.array_equal(w0, copies[0]) and np.array_equal(alphas, copies[1])


def test_coarse_frac_bits_warns_and_says_what_would_do():
    stats = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _call(frac_bits=20, stats=stats)
    msgs = [str(w.message) for w in caught if issubclass(w.category, ResolutionWarning)]
    assert len(msgs) == 1 and "frac_bits=20" in msgs[0] and "would bring the rounding" in msgs[0]
    assert stats["first_step_rounding"] > 1e-8


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
    with pytest.raises(ReversibilityError, match="(did not return|diverged).*use_deterministic"):
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
