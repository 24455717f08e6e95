"""The exact engine is faithful to float64 training (engine v2 targets).

* Its hypergradients (every kind: w0, v0, alphas, betas, meta) and its w_T
  agree with autograd through the plain float64 loop (``method="unrolled"``,
  an independent implementation) to <= 1e-11 relative at T = 50 on the digits
  MLP: the multiply by beta rounds to within one unit of 2**-52, so the two
  loops differ by float rounding only.
* Central finite differences of the exact forward map along random directions
  over all hyperparameters, momenta included, agree with its hypergradient to
  <= 1e-4 relative: momenta are quantised to 2**-32, so the forward map is no
  longer a visible staircase in beta.
"""

import autograd
import numpy as np
import pytest

import reversible
from reversible import data, models

T = 50
SIZES = [64, 50, 50, 10]
KINDS = ("w0", "v0", "alphas", "betas", "meta")


@pytest.fixture(scope="module")
def problem():
    digits = data.load_digits()
    rng = np.random.default_rng(0)
    perm = rng.permutation(digits.X.shape[0])
    train, valid = perm[:1000], perm[1000:1400]
    loss = models.make_train_loss((digits.X[train], digits.y[train]), SIZES, 100, seed=1,
                                  l2="group")
    w0 = models.init_mlp(SIZES, 0.1, seed=2)
    G = len(w0)
    args = dict(
        w0=w0,
        v0=[0.01 * rng.standard_normal(np.shape(p)) for p in w0],
        alphas=0.3 * (1 + 0.2 * rng.uniform(-1, 1, (T, G))),
        betas=0.9 + 0.05 * rng.uniform(-1, 1, (T, G)),
        meta=-4.0 + 0.1 * np.arange(G),
    )
    Xv, yv = digits.X[valid], digits.y[valid]

    def objective(method):
        def f(w0, v0, alphas, betas, meta):
            w_T = reversible.sgd(loss, w0, alphas, betas, meta, v0=v0, method=method)
            return models.nll(w_T, Xv, yv)
        return f

    def train(method, a):
        return reversible.sgd(loss, a["w0"], a["alphas"], a["betas"], a["meta"], v0=a["v0"],
                              method=method)

    def hypergrad(method):
        return dict(zip(KINDS, autograd.grad(objective(method), tuple(range(5)))(
            *[args[k] for k in KINDS])))

    return dict(args=args, objective=objective, train=train, exact=hypergrad("exact"),
                hypergrad=hypergrad)


def _flat(x):
    return np.concatenate([np.ravel(a) for a in x]) if isinstance(x, (list, tuple)) else np.ravel(x)


def _relerr(a, b):
    a, b = _flat(a), _flat(b)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_hypergradients_and_w_T_match_the_float64_loop(problem):
    ref = problem["hypergrad"]("unrolled")
    errs = {k: _relerr(problem["exact"][k], ref[k]) for k in KINDS}
    a = problem["args"]
    errs["w_T"] = _relerr(problem["train"]("exact", a), problem["train"]("unrolled", a))
    assert max(errs.values()) <= 1e-11, errs


def _combine(args, direction, h):
    out = {}
    for k in KINDS:
        if isinstance(args[k], list):
            out[k] = [p + h * q for p, q in zip(args[k], direction[k])]
        else:
            out[k] = args[k] + h * direction[k]
    return out


def _inner(grads, direction):
    return sum(float(np.dot(_flat(grads[k]), _flat(direction[k]))) for k in KINDS)


@pytest.mark.parametrize("which", ["all", "betas"])
def test_finite_differences_of_the_exact_forward_map(problem, which):
    """h = 1e-4 along a direction scaled to each hyperparameter: truncation error ~ h**2 and
    the 2**-33 rounding of beta over h ~ 1e-6 relative, both far inside 1e-4.  With the old
    2**-16 quantum the betas-only direction was off by 0.2."""
    args = problem["args"]
    rng = np.random.default_rng(10 if which == "all" else 11)
    scale = dict(w0=0.1, v0=0.01, alphas=0.05, betas=0.05, meta=1.0)
    direction = {}
    for k in KINDS:
        on = which == "all" or k == which
        if isinstance(args[k], list):
            direction[k] = [scale[k] * on * rng.standard_normal(np.shape(p)) for p in args[k]]
        else:
            direction[k] = scale[k] * on * rng.standard_normal(np.shape(args[k]))
    f = problem["objective"]("exact")
    h = 1e-4
    fd = (f(**_combine(args, direction, h)) - f(**_combine(args, direction, -h))) / (2 * h)
    an = _inner(problem["exact"], direction)
    assert abs(fd - an) <= 1e-4 * abs(an), (fd, an)


def test_effective_beta_is_faithful():
    assert abs(float(reversible.effective_beta(0.9999)) - 0.9999) <= 1e-9
    assert abs(float(reversible.effective_beta(0.999)) - 0.999) <= 2.0 ** -33
