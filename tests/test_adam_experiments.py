"""Adam experiments (adam_chaos, adam_schedules) in quick mode, their figures, and the
hypergradient the chaos figure plots checked against central differences."""

import numpy as np
import pytest

from experiments import adam_chaos, adam_schedules, common


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("adam_results")
    assert adam_chaos.main(["--quick", "--out", str(out), "--no-progress"]) == 0
    assert adam_schedules.main(["--quick", "--out", str(out), "--no-progress"]) == 0
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


def test_schedules_learned_beats_or_matches_the_grid_on_validation(results):
    meta, arr = common.load_results(results, "adam_schedules")
    T, G = meta["T"], len(meta["group_labels"])
    assert arr["learned_alpha"].shape == (T, G) and arr["learned_beta1"].shape == (T, G)
    assert np.all((arr["learned_beta1"] > 0) & (arr["learned_beta1"] < 1))
    best = meta["best_constant"]
    assert best["valid_loss"] == pytest.approx(np.nanmin(arr["grid_valid_loss"]))
    # meta-iteration 0 evaluates the best constant schedule itself
    assert arr["meta_objectives"][0] == pytest.approx(best["valid_loss"], rel=1e-12)
    # the schedule kept is the best meta-iterate, retrained: the same validation loss
    k = meta["best_iteration"]
    assert meta["final"]["learned"]["valid_loss"] == pytest.approx(arr["meta_objectives"][k],
                                                                   rel=1e-12)
    assert meta["final"]["learned"]["valid_loss"] <= best["valid_loss"] * (1 + 1e-12)


@pytest.mark.parametrize("name", ["adam_chaos", "adam_schedules"])
def test_figures_write_png_and_pdf(results, tmp_path, name):
    import importlib
    mod = importlib.import_module(f"figures.{name}")
    assert mod.main(["--results", str(results), "--out", str(tmp_path)]) == 0
    assert (tmp_path / f"{name}.png").stat().st_size > 1000
    assert (tmp_path / f"{name}.pdf").is_file()
