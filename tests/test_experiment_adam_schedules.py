"""experiments/adam_schedules.py (quick mode): learned Adam schedules against the best constant
schedule of a grid, and its figure."""

import numpy as np
import pytest

from experiments import adam_schedules, common


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("adam_results")
    assert adam_schedules.main(["--quick", "--out", str(out), "--no-progress"]) == 0
    return out


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


def test_figure_writes_png_and_pdf(results, tmp_path):
    from figures import adam_schedules as figure
    assert figure.main(["--results", str(results), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "adam_schedules.png").stat().st_size > 1000
    assert (tmp_path / "adam_schedules.pdf").is_file()
