"""reversible.optimize: each optimiser against its update rule, history, errors."""

import autograd.numpy as anp
import numpy as np
import pytest

import reversible
from reversible.errors import NonFiniteError


def quadratic(h, i):
    return anp.sum((h - 3.0) ** 2)


def test_sgd_matches_its_update_rule():
    res = reversible.optimize(quadratic, np.zeros(2), 3, optimizer="sgd", lr=0.1, progress=False)
    x = np.zeros(2)
    for _ in range(3):
        x = x - 0.1 * 2 * (x - 3.0)
    np.testing.assert_allclose(res.hypers, x, rtol=0, atol=1e-15)
    assert res.objectives.shape == (3,) and len(res.hypers_history) == 3
    np.testing.assert_array_equal(res.hypers_history[0], np.zeros(2))


def test_sign_sgd_moves_by_lr_per_step():
    res = reversible.optimize(quadratic, np.array([0.0, 10.0]), 4, optimizer="sign", lr=0.25,
                              progress=False)
    np.testing.assert_allclose(res.hypers, [1.0, 9.0])


def test_adam_first_step_is_lr_times_sign_and_converges():
    res = reversible.optimize(quadratic, np.zeros(3), 1, optimizer="adam", lr=0.01, progress=False)
    np.testing.assert_allclose(res.hypers, 0.01 * np.ones(3), rtol=1e-6)
    res = reversible.optimize(quadratic, np.zeros(3), 400, optimizer="adam", lr=0.1, progress=False)
    np.testing.assert_allclose(res.hypers, 3.0, atol=1e-3)
    assert res.objectives[-1] < res.objectives[0]


def test_containers_and_iteration_index():
    seen = []

    def obj(h, i):
        seen.append(i)
        return anp.sum(h["a"] ** 2) + anp.sum(h["b"][0] ** 2)

    res = reversible.optimize(obj, {"a": np.ones(2), "b": [np.ones(3)]}, 3, optimizer="sgd",
                              lr=0.5, progress=False)
    assert seen == [0, 1, 2]
    np.testing.assert_allclose(res.hypers["a"], 0.0)
    np.testing.assert_allclose(res.hypers["b"][0], 0.0)


def test_clip_caps_the_step_and_callback_stops():
    res = reversible.optimize(quadratic, np.zeros(1), 1, optimizer="sgd", lr=1.0, clip=0.5,
                              progress=False)
    np.testing.assert_allclose(res.hypers, [0.5])
    res = reversible.optimize(quadratic, np.zeros(1), 10, optimizer="sgd", lr=0.1,
                              callback=lambda i, h, f, g: i == 2, progress=False)
    assert res.stopped_early is True and res.objectives.size == 3


def test_errors_are_clear():
    with pytest.raises(ValueError, match="optimizer"):
        reversible.optimize(quadratic, np.zeros(1), 1, optimizer="lbfgs")
    with pytest.raises(ValueError, match="lr"):
        reversible.optimize(quadratic, np.zeros(1), 1, lr=-1)
    with np.errstate(invalid="ignore"), pytest.raises(NonFiniteError, match="meta-iteration 0"):
        reversible.optimize(lambda h, i: anp.sum(anp.log(h - 1.0)), np.zeros(1), 2, progress=False)


@pytest.mark.parametrize("option, error", [
    ({"b1": 1.0}, ValueError), ({"b1": -0.1}, ValueError), ({"b2": -1}, ValueError),
    ({"b2": 1}, ValueError), ({"b2": float("nan")}, ValueError), ({"eps": 0}, ValueError),
    ({"eps": -1e-8}, ValueError), ({"eps": float("inf")}, ValueError),
    ({"lr": float("nan")}, ValueError), ({"lr": "0.1"}, TypeError), ({"lr": 1j}, TypeError),
    ({"clip": 0}, ValueError), ({"clip": float("nan")}, ValueError), ({"steps": 2.5}, TypeError),
    ({"steps": True}, TypeError), ({"steps": -1}, ValueError), ({"callback": 3}, TypeError),
    ({"progress": "no"}, TypeError), ({"optimizer": "lbfgs"}, ValueError)])
def test_every_invalid_option_is_refused_before_any_evaluation(option, error):
    calls = []

    def objective(h, i):
        calls.append(i)
        return quadratic(h, i)

    kwargs = {"steps": 2, "progress": False, **option}
    steps = kwargs.pop("steps")
    with pytest.raises(error, match=next(iter(option))):
        reversible.optimize(objective, np.zeros(1), steps, **kwargs)
    assert calls == []


def test_edge_values_of_valid_options_are_accepted():
    res = reversible.optimize(quadratic, np.zeros(1), np.int64(3), b1=0.0, b2=0.0, eps=1e-12,
                              clip=10.0, progress=False)
    assert res.objectives.size == 3
