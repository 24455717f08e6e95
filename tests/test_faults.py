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


# --- ES / PES (longh) ---
#
# non-finite weights in a particle run (NaN loss, divergence): NonFiniteError naming step and
#   particle; a perturbed momentum outside (0, 1]: ValueError naming particle, group and step;
# a non-finite exact hypergradient in the smoothed reference; a non-finite online PES loss.


def _es_loss(w, m, t):
    return 0.5 * anp.sum(w ** 2) * (1.0 + m[0])


@pytest.mark.parametrize("method", ["es", "pes"])
def test_es_nan_in_the_run_names_the_step_and_particle(method):
    def loss(w, m, t):                      # NaN gradient from step 3 on
        return 0.5 * anp.sum(w ** 2) * (np.nan if t >= 3 else 1.0 + m[0])
    with pytest.raises(reversible.NonFiniteError, match=r"particle \d+ .*step 3"):
        reversible.sgd(loss, np.ones(3), np.full(6, 0.1), np.full(6, 0.5), np.array([0.1]),
                       method=method, sigma=0.1, particles=4)


def test_es_divergent_particle_is_named():
    """A perturbation that makes training blow up: Inf weights at some step, named."""
    with pytest.raises(reversible.NonFiniteError, match="lower sigma"):
        reversible.sgd(lambda w, m, t: anp.sum(anp.exp(m[0] * w)), np.ones(2), np.full(200, 1.0),
                       np.full(200, 0.9), np.array([50.0]), method="es", sigma=5.0, particles=4)


def test_es_perturbed_momentum_outside_its_range_is_loud():
    with pytest.raises(ValueError, match=r"momentum of particle .* step \d+ .*outside \(0, 1\]"):
        reversible.sgd(_es_loss, np.ones(2), np.full(5, 0.1), np.full(5, 0.99), np.array([0.1]),
                       method="es", sigma={"betas": 0.5}, particles=4)


def test_smoothed_reference_with_a_nonfinite_gradient_is_loud():
    from autograd import grad
    from reversible.smoothed import smoothed_gradient
    with pytest.raises(FloatingPointError, match="NaN or Inf"):
        smoothed_gradient(grad(lambda x: anp.sum(anp.sqrt(x))), np.array([0.01]), 1.0,
                          samples=20, seed=0)


def test_online_pes_nonfinite_loss_is_loud():
    from reversible.online import PersistentES, train_online
    est = PersistentES(K=2, sigma=0.1, particles=4)
    with pytest.raises(reversible.NonFiniteError, match="PES"):
        train_online(lambda w, m, t: anp.sum(w ** 2) * m[0], lambda w, t: anp.sum(w) * np.nan,
                     np.ones(2), np.array([1.0]), 4, est, lr=0.1, hyper_lr=0.1)
