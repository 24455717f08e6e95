"""experiments/l2_per_weight.py: one L2 penalty per weight (quick mode, bundled digits)."""

import numpy as np
import pytest
from autograd import grad

from experiments import l2_per_weight
from experiments.common import load_results
from _figures import check_figure_files


def _finite(tree):
    """Every number in a nested JSON structure is finite (and at least one number is there)."""
    numbers = []

    def walk(x):
        if isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)
        elif isinstance(x, (int, float)) and not isinstance(x, bool):
            numbers.append(float(x))
    walk(tree)
    return bool(numbers) and bool(np.all(np.isfinite(numbers)))


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    l2_per_weight.main(["--quick", "--out", str(out)])
    return out


def test_figure_writes_png_and_pdf(results, tmp_path):
    from figures import l2_per_weight as figure
    paths = figure.plot(results, tmp_path)
    check_figure_files(paths)


def test_l2_per_weight_quick(results):
    meta, arrays = load_results(results, "l2_per_weight")
    assert meta["n_hyperparameters"] == 64 * 10 + 10
    assert arrays["log_l2_weights"].shape == (64, 10)
    assert arrays["log_l2_biases"].shape == (10,)
    assert np.all(np.isfinite(arrays["log_l2_weights"]))
    assert _finite(meta["before"]) and _finite(meta["after"])
    assert len(meta["meta"]["objectives"]) == meta["config"]["meta_steps"]
    assert not np.allclose(arrays["log_l2_weights"], meta["config"]["init_log_l2"])


def _tiny_logistic():
    from reversible.data import load_digits
    cfg = dict(l2_per_weight.QUICK, n_train=40, n_valid=40, n_test=10, T=6, batch=20)
    return l2_per_weight.logistic_setup(load_digits(), cfg, seed=0), cfg


def test_l2_hypergradient_matches_unrolled():
    (train, valid, _, layers, w0), cfg = _tiny_logistic()
    from reversible.models import nll
    rng = np.random.default_rng(0)
    h0 = [rng.normal(-2.0, 1.0, np.shape(w)) for w in w0]

    def f(h, method):
        w = l2_per_weight.train_logistic(train, layers, w0, [h[0], h[1]], cfg, 3, method=method)
        return nll(w, valid.X, valid.y)

    g_exact = grad(lambda h: f(h, "exact"))(h0)
    g_unrolled = grad(lambda h: f(h, "unrolled"))(h0)
    for a, b in zip(g_exact, g_unrolled):
        assert np.any(a != 0)
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-12)


def test_bad_sizes_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="exceeds"):
        l2_per_weight.main(["--quick", "--out", str(tmp_path), "--n-train", "5000"])


@pytest.mark.slow
def test_quick_run_on_real_mnist(shared_data, tmp_path):
    l2_per_weight.main(["--quick", "--out", str(tmp_path), "--mnist-dir", str(shared_data / "mnist")])
    meta, arrays = load_results(tmp_path, "l2_per_weight")
    assert meta["dataset"] == "mnist" and arrays["log_l2_weights"].shape == (784, 10)
