"""experiments/multitask.py: learned weight sharing between tasks (quick mode, bundled digits)."""

import numpy as np
import pytest

from experiments import multitask
from experiments.common import load_results
from _figures import check_figure_files


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    multitask.main(["--quick", "--out", str(out)])
    return out


def test_figure_writes_png_and_pdf(results, tmp_path):
    from figures import multitask as figure
    paths = figure.plot(results, tmp_path)
    check_figure_files(paths)


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


def test_bad_rotations_raise_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="comma-separated"):
        multitask.main(["--quick", "--out", str(tmp_path), "--rotations", "a,b"])


@pytest.mark.slow
def test_quick_run_on_real_omniglot(shared_data, tmp_path):
    multitask.main(["--quick", "--out", str(tmp_path), "--omniglot-zip", str(shared_data / "omniglot")])
    meta, arrays = load_results(tmp_path, "multitask")
    assert meta["dataset"] == "omniglot" and len(meta["tasks"]) == 4
    assert all(np.isfinite(r["test_nll"]) for r in meta["table"].values())
