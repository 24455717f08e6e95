"""Experiments 3, 4, 5, 7 of issue 6: per-weight L2, learned training data, multitask
weight sharing, overfitting a small validation set (quick mode, bundled digits)."""

import json

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad

from experiments import l2_per_weight, learned_data, multitask, overfit_validation
from experiments.common import load_results


def _finite(tree):
    if isinstance(tree, dict):
        return all(_finite(v) for v in tree.values())
    if isinstance(tree, (list, tuple)):
        return all(_finite(v) for v in tree)
    if isinstance(tree, (int, float)) and not isinstance(tree, bool):
        return bool(np.isfinite(tree))
    return True


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("results_b")
    for mod in (l2_per_weight, learned_data, multitask, overfit_validation):
        mod.main(["--quick", "--out", str(out)])
    return out


def test_l2_per_weight_quick(results):
    meta, arrays = load_results(results, "l2_per_weight")
    assert meta["n_hyperparameters"] == 64 * 10 + 10
    assert arrays["log_l2_weights"].shape == (64, 10)
    assert arrays["log_l2_biases"].shape == (10,)
    assert np.all(np.isfinite(arrays["log_l2_weights"]))
    assert _finite(meta["before"]) and _finite(meta["after"])
    assert len(meta["meta"]["objectives"]) == meta["config"]["meta_steps"]
    assert not np.allclose(arrays["log_l2_weights"], meta["config"]["init_log_l2"])


def test_learned_data_quick(results):
    meta, arrays = load_results(results, "learned_data")
    assert arrays["images"].shape == (10, 64)
    assert arrays["real_images"].shape == (10, 64)
    assert np.all(np.isfinite(arrays["images"])) and np.any(arrays["images"] != 0)
    for key in ("learned", "one_real_image_per_class"):
        assert 0 <= meta[key]["test"]["accuracy"] <= 1
        assert np.isfinite(meta[key]["test"]["nll"])


def test_multitask_quick(results):
    meta, arrays = load_results(results, "multitask")
    K = len(meta["tasks"])
    assert K == 2 * 2                                         # digit groups x rotations
    for name in ("separate", "tied", "learned"):
        row = meta["table"][name]
        assert np.isfinite(row["train_nll"]) and np.isfinite(row["test_nll"])
    for l in range(len(meta["layers"]) - 1):
        assert arrays[f"S_learned_{l}"].shape == (K, K)
        assert np.all(np.isfinite(arrays[f"S_learned_{l}"]))


def test_overfit_validation_quick(results):
    meta, arrays = load_results(results, "overfit_validation")
    n = meta["meta_iterations"]
    assert n >= 1
    for split in ("train", "valid", "test"):
        acc = arrays[f"{split}_accuracy"]
        assert acc.shape == (n,) and np.all((acc >= 0) & (acc <= 1))
    json.dumps(meta)                                           # well-formed JSON


def test_figures(results, tmp_path):
    from figures import l2_per_weight as f3, learned_data as f4, multitask as f5
    from figures import overfit_validation as f7
    paths = []
    for mod in (f3, f4, f5, f7):
        paths += mod.plot(results, tmp_path)
    for p in paths:
        assert p.is_file() and p.stat().st_size > 1000
    assert {p.suffix for p in paths} == {".png", ".pdf"}


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


def test_sharing_matrix_limits():
    from reversible.data import load_digits
    cfg = dict(multitask.QUICK)
    tasks = multitask.digit_tasks(load_digits(), cfg, seed=0)
    model = multitask.MultitaskModel(tasks, [8], -4.0, -2.0, seed=0)
    K = model.K
    z = model.z0
    sep = model.weights(z, [np.eye(K)] * model.n_layers)
    for a, b in zip(sep, z):
        np.testing.assert_array_equal(a, b)                    # S = I: separate networks
    tied = model.weights(z, [multitask.sharing_matrix(K, 1.0)] * model.n_layers)
    for a, b in zip(tied, z):
        np.testing.assert_allclose(a, np.broadcast_to(b.mean(axis=0), a.shape))
    np.testing.assert_allclose(multitask.tied_matrix(K), multitask.sharing_matrix(K, 1.0))
    C, R = multitask.covariance(multitask.sharing_matrix(K, 0.5))
    np.testing.assert_allclose(np.diag(R), 1.0)
    np.testing.assert_allclose(C, C.T)


def test_tasks_are_disjoint_rotations():
    from reversible.data import load_digits
    d = load_digits()
    X = d.X[:5]
    np.testing.assert_array_equal(multitask.rotate(multitask.rotate(X, (8, 8), 90), (8, 8), 270), X)
    with pytest.raises(ValueError, match="multiples of 90"):
        multitask.rotate(X, (8, 8), 45)
    tasks = multitask.digit_tasks(d, dict(multitask.QUICK), seed=0)
    t0, t1 = tasks[0], tasks[1]                                # group 0 and its rotated copy
    np.testing.assert_array_equal(t0.y["train"], t1.y["train"])
    np.testing.assert_array_equal(multitask.rotate(t0.X["train"], (8, 8), 90), t1.X["train"])
    rows = {s: {r.tobytes() for r in t0.X[s]} for s in ("train", "valid", "test")}
    assert not (rows["train"] & rows["valid"]) and not (rows["train"] & rows["test"])


def test_bad_sizes_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="exceeds"):
        l2_per_weight.main(["--quick", "--out", str(tmp_path), "--n-train", "5000"])
    with pytest.raises(ValueError, match="comma-separated"):
        multitask.main(["--quick", "--out", str(tmp_path), "--rotations", "a,b"])


def test_soft_cap_is_smooth_bound():
    h = np.linspace(-10, 10, 101)
    c = overfit_validation.soft_cap(h, 2.0)
    assert np.all(c < 2.0) and np.all(np.diff(c) > 0)
    np.testing.assert_allclose(c[:20], h[:20], atol=1e-3)        # identity far below the cap
    g = grad(lambda x: anp.sum(overfit_validation.soft_cap(x, 2.0)))(h)
    assert np.all((g > 0) & (g <= 1))


@pytest.mark.slow
def test_quick_runs_on_real_data(shared_data, tmp_path):
    mnist = str(shared_data / "mnist")
    l2_per_weight.main(["--quick", "--out", str(tmp_path), "--mnist-dir", mnist])
    meta, arrays = load_results(tmp_path, "l2_per_weight")
    assert meta["dataset"] == "mnist" and arrays["log_l2_weights"].shape == (784, 10)
    multitask.main(["--quick", "--out", str(tmp_path), "--omniglot-zip",
                    str(shared_data / "omniglot")])
    meta, arrays = load_results(tmp_path, "multitask")
    assert meta["dataset"] == "omniglot" and len(meta["tasks"]) == 4
    assert all(np.isfinite(r["test_nll"]) for r in meta["table"].values())
