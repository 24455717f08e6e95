"""The smoothed reference (reversible.smoothed) against closed forms, and compare's hook.

``f(theta) = sum sin(theta)`` has ``E grad f(theta + sigma eps) = cos(theta) exp(-sigma^2 / 2)``;
the statistical checks use the estimate's own standard error with a
Bonferroni bound: a correct implementation fails with probability <= 1e-6.
"""

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import elementwise_grad, grad
from scipy.stats import norm

import reversible
from reversible.grading import grade, method_kwargs
from reversible.smoothed import SmoothedObjective, smoothed_gradient

FALSE_FAILURE = 1e-6


def within(est, se, ref):
    z = np.abs((np.ravel(est) - np.ravel(ref)) / np.ravel(se))
    return float(z.max()) < norm.isf(FALSE_FAILURE / (2 * z.size))


def test_sine_closed_form_with_dicts():
    theta = {"a": np.array([0.3, 1.2]), "b": np.array([[-0.7]])}
    sigma = 0.8
    f = lambda h: anp.sum(anp.sin(h["a"])) + anp.sum(anp.sin(h["b"]))
    out = smoothed_gradient(grad(f), theta, sigma, samples=400, seed=0)
    for k in theta:
        ref = np.cos(theta[k]) * np.exp(-sigma ** 2 / 2)
        assert out.mean[k].shape == theta[k].shape
        assert within(out.mean[k], out.standard_error[k], ref)
        # power: the unsmoothed gradient cos(theta) is far away
        assert not within(out.mean[k], out.standard_error[k], np.cos(theta[k]))
    assert out.samples == 400


def test_antithetic_pairs_make_odd_parts_exact_and_seeds_reproduce():
    """A quadratic's gradient is linear: every antithetic pair averages to it exactly."""
    theta = np.array([0.5, -2.0, 1.0])
    f = lambda x: anp.sum(x ** 2) + x[0] * x[1]
    out = smoothed_gradient(grad(f), theta, 0.7, samples=6, seed=3)
    np.testing.assert_allclose(out.mean, grad(f)(theta), rtol=1e-12, atol=1e-12)
    a = smoothed_gradient(elementwise_grad(anp.sin), theta, 0.7, samples=6, seed=3).mean
    b = smoothed_gradient(grad(lambda x: anp.sum(anp.sin(x))), theta, 0.7, samples=6, seed=3).mean
    np.testing.assert_array_equal(a, b)


def test_value_and_grad_gives_the_smoothed_value():
    from autograd import value_and_grad
    theta = np.array([0.4])
    out = smoothed_gradient(None, theta, 0.5, samples=2000, seed=1,
                            value_and_grad_fn=value_and_grad(lambda x: anp.sum(anp.cos(x))))
    assert abs(out.value - np.cos(0.4) * np.exp(-0.125)) < 0.02


@pytest.mark.parametrize("kw,message", [
    ({"sigma": 0.0}, "positive"), ({"sigma": float("nan")}, "positive"),
    ({"sigma": 0.1, "samples": 3}, "even"), ({"sigma": 0.1, "samples": 0}, "even"),
    ({"sigma": 0.1, "seed": -2}, "seed"),
])
def test_bad_arguments_are_loud(kw, message):
    with pytest.raises(ValueError, match=message):
        smoothed_gradient(elementwise_grad(anp.sin), np.array([0.1]), **kw)


def test_needs_exactly_one_function():
    with pytest.raises(ValueError, match="exactly one"):
        smoothed_gradient(None, np.array([0.1]), 0.1)


# ------------------------------------------------------------------ compare's reference
A = np.array([1.0, 3.0, 0.5])
W0 = np.array([0.3, -0.2, 0.1])
T = 4


def loss(w, m, t):
    return 0.5 * anp.sum((A + m[0] ** 2) * w ** 2) - anp.sum(w)


def objective(h, spec):
    w = reversible.sgd(loss, W0, anp.exp(h["log_alphas"]), np.full(T, 0.5), h["meta"],
                       **method_kwargs(spec))
    return anp.sum(w ** 2)


def test_compare_grades_against_the_smoothed_reference():
    h = {"log_alphas": np.full(T, np.log(0.5)), "meta": np.array([0.2])}
    spec = "smoothed:sigma=0.4:samples=8:seed=2:base=unrolled"
    table = reversible.compare(objective, h, ["unrolled", spec], reference=spec, memory=False)
    assert table.reference == spec
    assert table.row(spec)["cosine"] == pytest.approx(1.0)
    direct = smoothed_gradient(grad(lambda x: objective(x, "unrolled")), h, 0.4, samples=8, seed=2)
    assert set(table.meta["reference_standard_error"]) == {"log_alphas", "meta"}
    np.testing.assert_allclose(table.meta["reference_standard_error"]["meta"],
                               direct.standard_error["meta"])
    exact = grad(lambda x: objective(x, "unrolled"))(h)
    flat = lambda d: np.concatenate([np.ravel(d[k]) for k in ("log_alphas", "meta")])
    expected = grade(flat(exact), flat(direct.mean))
    assert table.row("unrolled")["cosine"] == pytest.approx(expected["cosine"], rel=1e-9)
    assert table.row("unrolled")["norm_ratio"] == pytest.approx(expected["norm_ratio"], rel=1e-9)


@pytest.mark.parametrize("spec,message", [("smoothed", "give sigma"),
                                          ("smoothed:sigma=0.1:bogus=1", "unknown option"),
                                          ("smoothed:sigma=0.1:samples=5", "even")])
def test_bad_reference_specs_are_loud(spec, message):
    with pytest.raises(ValueError, match=message):
        SmoothedObjective(objective, spec)
