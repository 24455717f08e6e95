"""experiments/overfit_validation.py: overfitting a small validation set (quick mode)."""

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad

from experiments import overfit_validation
from experiments.common import load_results
from _figures import check_figure_files


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    overfit_validation.main(["--quick", "--out", str(out)])
    return out


def test_figure_writes_png_and_pdf(results, tmp_path):
    from figures import overfit_validation as figure
    paths = figure.plot(results, tmp_path)
    check_figure_files(paths)


def test_overfit_validation_quick(results):
    meta, arrays = load_results(results, "overfit_validation")
    n = meta["meta_iterations"]
    assert n == overfit_validation.QUICK["meta_steps"]          # 100 % validation accuracy not reached
    for split in ("train", "valid", "test"):
        assert arrays[f"{split}_accuracy"].shape == arrays[f"{split}_nll"].shape == (n,)
    # the meta-objective is the validation loss: every meta-step lowers it
    assert np.all(np.diff(arrays["valid_nll"]) < 0)
    best = int(np.argmax(arrays["test_accuracy"]))
    assert meta["best_test_accuracy"] == arrays["test_accuracy"][best]
    assert meta["best_test_accuracy_at"] == best


def test_soft_cap_is_smooth_bound():
    h = np.linspace(-10, 10, 101)
    c = overfit_validation.soft_cap(h, 2.0)
    assert np.all(c < 2.0) and np.all(np.diff(c) > 0)
    np.testing.assert_allclose(c[:20], h[:20], atol=1e-3)        # identity far below the cap
    g = grad(lambda x: anp.sum(overfit_validation.soft_cap(x, 2.0)))(h)
    assert np.all((g > 0) & (g <= 1))
