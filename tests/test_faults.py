"""Every path is loud: faults injected on purpose, one section per area (concatenated by the lead)."""

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad

import reversible

# --- ES / PES (longh) ---


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
