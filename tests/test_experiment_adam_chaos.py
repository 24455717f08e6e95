"""experiments/adam_chaos.py (quick mode): loss and exact hypergradient against the learning
rate for Adam and SGD, the hypergradient checked against central differences, and its figure."""

import numpy as np
import pytest

from experiments import adam_chaos, common


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("adam_results")
    assert adam_chaos.main(["--quick", "--out", str(out), "--no-progress"]) == 0
    return out


def test_chaos_results_are_complete_and_reversed_exactly(results):
    meta, arr = common.load_results(results, "adam_chaos")
    assert meta["reversed_exactly"] is True and meta["diverged_points"] == 0
    for opt in ("adam", "sgd"):
        assert arr[f"{opt}_loss"].shape == (len(meta["Ts"]), meta["points"])
        assert np.all(np.isfinite(arr[f"{opt}_loss"])) and np.all(np.isfinite(arr[f"{opt}_grad"]))
    assert set(meta["onset_of_chaos"]) == {f"{o}_T{T}" for o in ("adam", "sgd") for T in meta["Ts"]}


def test_chaos_hypergradient_matches_central_differences():
    from reversible.data import load_dataset
    from reversible.models import init_mlp, make_train_loss
    data = load_dataset("digits", n=60)
    sizes = [data.d, 6, data.n_classes]
    problem = (data, make_train_loss(data, sizes, 20, shuffle=False), init_mlp(sizes, 0.1, 0))
    la, h = -4.0, 1e-5
    _, grad, exact = adam_chaos.run_point("adam", la, 6, problem)
    up = adam_chaos.run_point("adam", la + h, 6, problem)[0]
    down = adam_chaos.run_point("adam", la - h, 6, problem)[0]
    assert exact and abs(grad - (up - down) / (2 * h)) < 1e-5 * max(1.0, abs(grad))


def test_figure_writes_png_and_pdf(results, tmp_path):
    from figures import adam_chaos as figure
    assert figure.main(["--results", str(results), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "adam_chaos.png").stat().st_size > 1000
    assert (tmp_path / "adam_chaos.pdf").is_file()
