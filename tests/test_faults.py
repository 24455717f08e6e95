"""Fault injection: every fault is loud (a named error), never a silent wrong result."""

import autograd
import autograd.numpy as anp
import numpy as np
import pytest
from autograd.extend import defjvp, defvjp, primitive

import reversible
from reversible.errors import NonFiniteError

# --- approximate methods (adam) ---
# Each float method trains and back-propagates in float64; a NaN or Inf in a gradient,
# a Hessian-vector product or the state must raise NonFiniteError naming the step, as the
# exact engine does, instead of returning NaN hypergradients.  Method options that would be
# silently rounded or accepted (fractional K, NaN step sizes, negative tolerances) are refused.

_T = 8
_FLOAT_METHODS = ["exact", "unrolled", "checkpointed", "truncated", "drmad", "drmad_hybrid",
                  "forward", "neumann", "cg", "identity"]
_ADAM_METHODS = ["exact", "unrolled", "checkpointed", "truncated", "drmad", "forward"]


def _loss_nan_at(step):
    def loss(w, meta, t):
        base = anp.sum(w ** 2) + anp.sum(anp.exp(meta) * w ** 2)
        if t == step:
            return base + anp.sqrt(w[0] - 10.0)            # NaN gradient (sqrt of a negative)
        return base
    return loss


@primitive
def _unit(x):
    """``ones_like(x)`` whose own derivative is NaN: a term with finite gradient, NaN curvature."""
    return np.ones_like(x)


defvjp(_unit, lambda ans, x: lambda g: g * np.nan)
defjvp(_unit, lambda g, ans, x: g * np.nan)


@primitive
def _identity_with_nan_curvature(x):
    return x


defvjp(_identity_with_nan_curvature, lambda ans, x: lambda g: g * _unit(x))
defjvp(_identity_with_nan_curvature, lambda g, ans, x: g * _unit(x))


def _hypergrad(train, method, loss, **options):
    w0, meta = np.full(3, 0.5), np.zeros(3)

    def f(m):
        if train == "sgd":
            w = reversible.sgd(loss, w0, np.full(_T, 0.1), np.full(_T, 0.9), m, method=method,
                               **options)
        else:
            w = reversible.adam(loss, w0, np.full(_T, 0.05), np.full(_T, 0.9), np.full(_T, 0.99),
                                m, method=method, **options)
        return anp.sum(w ** 2)

    return autograd.grad(f)(meta)


@pytest.mark.parametrize("method", _FLOAT_METHODS)
@pytest.mark.parametrize("step", [0, 5])
def test_sgd_methods_name_the_step_of_a_nan_gradient(method, step):
    with np.errstate(invalid="ignore"), pytest.raises(NonFiniteError, match=f"at step {step}"):
        _hypergrad("sgd", method, _loss_nan_at(step))


@pytest.mark.parametrize("method", _ADAM_METHODS)
@pytest.mark.parametrize("step", [0, 5])
def test_adam_methods_name_the_step_of_a_nan_gradient(method, step):
    with np.errstate(invalid="ignore"), pytest.raises(NonFiniteError, match=f"at step {step}"):
        _hypergrad("adam", method, _loss_nan_at(step))


def test_drmad_hybrid_blames_the_step_not_w0():
    with np.errstate(invalid="ignore"), pytest.raises(NonFiniteError) as err:
        _hypergrad("sgd", "drmad_hybrid", _loss_nan_at(2), K=3)
    assert "at step 2" in str(err.value) and "w0" not in str(err.value)


@pytest.mark.parametrize("method", ["checkpointed", "truncated", "drmad", "forward"])
def test_nan_hessian_vector_product_names_its_step(method):
    """A loss whose gradient is finite but whose curvature is not at step 3."""
    def loss(w, meta, t):
        base = anp.sum(w ** 2) + anp.sum(anp.exp(meta) * w ** 2)
        return base + (anp.sum(_identity_with_nan_curvature(w)) if t == 3 else 0.0)

    with np.errstate(invalid="ignore", divide="ignore"), \
            pytest.raises(NonFiniteError, match="at step 3"):
        _hypergrad("sgd", method, loss, **({"K": _T} if method == "truncated" else {}))


@pytest.mark.parametrize("method, options, fragment", [
    ("truncated", {"K": 2.5}, "K must be an integer"),
    ("truncated", {"K": np.nan}, "K must be an integer"),
    ("drmad_hybrid", {"K": 1.5}, "K must be an integer"),
    ("checkpointed", {"segment": 2.5}, "segment must be an integer"),
    ("checkpointed", {"segment": 0}, "segment must be an integer >= 1"),
    ("drmad", {"reverse_steps": 3.5}, "reverse_steps must be an integer"),
    ("drmad", {"velocity": "bogus"}, "velocity must be 'path' or 'interpolate'"),
    ("neumann", {"step": np.nan}, "step must be finite and > 0"),
    ("neumann", {"step": -0.1}, "step must be finite and > 0"),
    ("neumann", {"terms": 2.5}, "terms must be an integer"),
    ("cg", {"tol": -1}, "tol must be a finite number >= 0"),
    ("cg", {"tol": np.nan}, "tol must be a finite number"),
    ("cg", {"damping": np.inf}, "damping must be a finite number"),
    ("cg", {"iterations": 1.5}, "iterations must be an integer"),
    ("identity", {"scale": np.nan}, "scale must be a finite number"),
    ("identity", {"at_steps": 0}, "at_steps must be an integer >= 1"),
    ("forward", {"basis": {"meta": np.full((1, 3), np.nan)}}, "must be finite"),
])
def test_method_options_are_never_silently_rounded_or_accepted(method, options, fragment):
    with pytest.raises(ValueError, match=fragment):
        _hypergrad("sgd", method, _loss_nan_at(-1), **options)


@pytest.mark.parametrize("method, options, fragment", [
    ("truncated", {"K": 2.5}, "K must be an integer"),
    ("checkpointed", {"segment": 1.5}, "segment must be an integer"),
    ("drmad", {"velocity": "path"}, "needs a momentum velocity"),
    ("cg", {}, "does not support Adam"),
])
def test_adam_method_options_are_checked(method, options, fragment):
    with pytest.raises(ValueError, match=fragment):
        _hypergrad("adam", method, _loss_nan_at(-1), **options)
