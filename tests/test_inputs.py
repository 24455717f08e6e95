"""reversible.inputs and reversible.validate: one validation path for every front end."""

import autograd
import autograd.numpy as anp
import numpy as np
import pytest

from reversible import inputs, validate
from reversible.buffer import BETA_ONE


def _loss(w, meta, t):
    return anp.sum(w ** 2)


# ----------------------------------------------------------------- validate
@pytest.mark.parametrize("value, error, fragment", [
    (np.array([1.0, 2j]), TypeError, "x is complex"),
    (np.array(["a"]), TypeError, "real float array; got dtype <U1"),
    (np.array([True]), TypeError, "dtype bool"),
    ([[1.0], [1.0, 2.0]], TypeError, "ragged"),
    (np.array([1.0, np.inf]), ValueError, r"NaN or Inf \(1 of 2 entries\)"),
])
def test_real_array_refuses(value, error, fragment):
    with pytest.raises(error, match=fragment):
        validate.real_array(value, "x")


def test_real_array_accepts_integers_and_boxes():
    assert validate.real_array([1, 2], "x").tolist() == [1, 2]
    seen = []
    autograd.grad(lambda x: seen.append(validate.real_array(x, "x")) or anp.sum(x))(np.ones(2))
    assert type(seen[0]) is np.ndarray


@pytest.mark.parametrize("kwargs, value, error, fragment", [
    (dict(low=0.0, low_open=True), 0.0, ValueError, r"lie in \(0, inf\); got 0.0"),
    (dict(low=0.0, high=1.0, high_open=True), 1.0, ValueError, r"lie in \[0, 1\); got 1.0"),
    (dict(), float("nan"), ValueError, "finite; got nan"),
    (dict(), 1 + 2j, TypeError, "a real number"),
    (dict(), True, TypeError, "a real number"),
    (dict(), "0.1", TypeError, "a real number"),
    (dict(integer=True), 2.5, TypeError, "an integer; got 2.5"),
    (dict(integer=True, low=1), 0, ValueError, r"lie in \[1, inf\)"),
])
def test_scalar_refuses(kwargs, value, error, fragment):
    with pytest.raises(error, match=fragment):
        validate.scalar(value, "x", **kwargs)


def test_scalar_returns_python_numbers():
    assert validate.scalar(np.float32(0.5), "x", 0.0, 1.0) == 0.5
    assert type(validate.scalar(np.int64(3), "K", 1, integer=True)) is int
    assert validate.scalar(np.array(0.25), "x") == 0.25


def test_choice_flag_stats_function():
    assert validate.choice("a", "mode", ("a", "b")) == "a"
    with pytest.raises(ValueError, match="mode must be one of 'a', 'b'; got 'c'"):
        validate.choice("c", "mode", ("a", "b"))
    with pytest.raises(ValueError, match="got \\['a'\\]"):
        validate.choice(["a"], "mode", ("a", "b"))
    with pytest.raises(TypeError, match="must be True or False; got 1"):
        validate.flag(1, "progress")
    d = {}
    assert validate.stats_dict(d) is d and validate.stats_dict(None) == {}
    with pytest.raises(TypeError, match="stats must be a dict.*got list"):
        validate.stats_dict([])
    with pytest.raises(TypeError, match="f must be a function"):
        validate.function(3, "f")


# ----------------------------------------------------------------- inputs
def test_schedule_shapes_and_boxes():
    assert inputs.schedule(np.arange(1, 4), 2, "a").tolist() == [[1, 1], [2, 2], [3, 3]]
    out = inputs.schedule(np.ones((3, 2)), 2, "a")
    assert out.shape == (3, 2) and out.dtype == np.float64
    g = autograd.grad(lambda a: anp.sum(inputs.schedule(a, 3, "a") * np.arange(3)))(np.ones(4))
    assert g.tolist() == [3.0] * 4
    with pytest.raises(ValueError, match=r"shape \(T,\) or \(T, 2\) for 2 parameter group"):
        inputs.schedule(np.ones((3, 3)), 2, "a")
    with pytest.raises(ValueError, match="at least one step"):
        inputs.schedule(np.ones(0), 1, "a")
    with pytest.raises(ValueError, match=r"entry of a must lie in \[0, 1\]; got 2.0 at step 1"):
        inputs.schedule(np.array([0.5, 2.0]), 1, "a", 0.0, 1.0)
    with pytest.raises(ValueError, match="got -1.0 at step 2, group 1"):
        inputs.schedule(np.array([[0.5, 0.5], [0.5, 0.5], [0.5, -1]]), 2, "a", 0.0, 1.0)


def test_momentum_schedule_uses_the_engine_quantum():
    with pytest.raises(ValueError, match="rounds to zero"):
        inputs.momentum_schedule(np.full(2, 0.4 / BETA_ONE), 1)
    assert inputs.momentum_schedule(np.full(2, 1.0 / BETA_ONE), 1).shape == (2, 1)
    with pytest.raises(ValueError, match="logistic"):
        inputs.momentum_schedule(np.full(2, 1.5), 1)


def test_same_steps():
    assert inputs.same_steps(a=np.ones((3, 1)), b=np.ones((3, 2))) == 3
    with pytest.raises(ValueError, match="a has 3 steps but c has 4"):
        inputs.same_steps(a=np.ones((3, 1)), b=np.ones((3, 1)), c=np.ones((4, 1)))


def test_parameters_flatten_and_check_v0():
    w0 = {"a": np.ones((2, 2)), "b": [np.zeros(3)]}
    p = inputs.parameters(w0, meta=np.array(2.0), v0={"a": np.full((2, 2), 3.0), "b": [np.ones(3)]})
    assert p.num_groups == 2 and p.w0.tolist() == [1] * 4 + [0] * 3
    assert p.v0.tolist() == [3] * 4 + [1] * 3 and p.meta.tolist() == [2.0]
    back = p.unflatten(p.w0)
    assert list(back) == ["a", "b"] and back["a"].shape == (2, 2)
    with pytest.raises(ValueError, match="v0 must have the same structure as w0"):
        inputs.parameters(w0, v0={"a": np.ones((2, 2)), "b": [np.ones(2)]})


def test_sgd_inputs_build_a_problem_on_read_only_views():
    w0 = np.ones(3)
    stats = {}
    inp = inputs.sgd_inputs(_loss, w0, np.full(4, 0.1), np.full((4, 1), 0.9), stats=stats)
    assert inp.stats is stats
    prob = inp.problem
    assert (prob.T, prob.G, prob.N, prob.frac_bits) == (4, 1, 3, 52)
    assert prob.w0.tolist() == [1, 1, 1] and not prob.w0.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        prob.w0 += 1.0
    assert w0.tolist() == [1, 1, 1] and w0.flags.writeable
    assert prob.grad(prob.w0, None, 0).tolist() == [2, 2, 2]
