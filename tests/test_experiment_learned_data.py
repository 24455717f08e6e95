"""experiments/learned_data.py: learned training images (quick mode, bundled digits)."""

import numpy as np
import pytest
from autograd import grad

from experiments import learned_data
from experiments.common import load_results
from _figures import check_figure_files


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    learned_data.main(["--quick", "--out", str(out)])
    return out


def test_figure_writes_png_and_pdf(results, tmp_path):
    from figures import learned_data as figure
    paths = figure.plot(results, tmp_path)
    check_figure_files(paths)


def test_learned_data_quick(results):
    meta, arrays = load_results(results, "learned_data")
    assert arrays["images"].shape == (10, 64)
    assert arrays["real_images"].shape == (10, 64)
    assert np.all(np.isfinite(arrays["images"])) and np.any(arrays["images"] != 0)
    assert not np.array_equal(arrays["images"], arrays["real_images"])     # the images moved
    for key in ("learned", "one_real_image_per_class"):
        # ten training images already beat chance (0.1) and the uniform prediction (log 10)
        assert meta[key]["test"]["accuracy"] > 0.2, key
        assert meta[key]["valid"]["nll"] < np.log(10), key


def test_learned_data_hypergradient_matches_finite_difference():
    from reversible.models import init_mlp, nll
    from reversible.data import load_digits
    d = load_digits()
    cfg = dict(learned_data.QUICK, T=4)
    w0 = init_mlp([64, 10], scale=0.01, seed=0)
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 1, (10, 64))
    log_l2 = np.array([-3.0])

    def f(imgs, method="exact"):
        return nll(learned_data.train_on(imgs, log_l2, w0, cfg, method), d.X[:200], d.y[:200])

    g = grad(f)(images)
    eps = 1e-5             # differences of the float64 (unrolled) run; fixed point rounds at 2^-F
    for (i, j) in [(0, 10), (3, 20), (9, 35)]:
        e = np.zeros_like(images)
        e[i, j] = eps
        fd = (f(images + e, "unrolled") - f(images - e, "unrolled")) / (2 * eps)
        assert abs(g[i, j] - fd) < 1e-9 + 1e-5 * abs(fd)
