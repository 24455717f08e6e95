"""experiments/schedules.py: learned per-step schedules (quick mode)."""

import numpy as np
import pytest

from experiments import common, schedules


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    assert schedules.main(["--quick", "--out", str(out), "--no-progress"]) == 0
    return out


def test_schedules_quick_results_are_finite_and_well_formed(quick_results):
    meta, arr = common.load_results(quick_results, "schedules")
    T, G = meta["T"], len(meta["groups"])
    assert G == 2 * (len(meta["layer_sizes"]) - 1)
    for k in ("log_alphas", "logit_betas"):
        assert arr[k].shape == (T, G) and np.all(np.isfinite(arr[k]))
    assert arr["log_scales"].shape == (G,)
    assert arr["history_log_alphas"].shape == (meta["meta_steps"], T, G)
    assert arr["objectives"].shape == (meta["meta_steps"],) and np.all(np.isfinite(arr["objectives"]))
    assert not np.array_equal(arr["log_alphas"], arr["history_log_alphas"][0])    # schedules moved
    assert arr["curve_train_before"].shape == (T + 1,)
    assert arr["smooth_dalpha"].shape == (meta["smooth_seeds"], T, G)
    assert np.all(np.isfinite(arr["smooth_dalpha"])) and np.any(arr["smooth_dalpha"] != 0)
    assert meta["reversed_exactly"] is True
    # the learning curve's first point is the loss at w0, the same before and after
    # only if the initial scales did not move: they did move, so the curves differ
    assert not np.allclose(arr["curve_train_before"], arr["curve_train_after"])


def test_figures_write_png_and_pdf(quick_results, tmp_path):
    from figures import schedules as figure
    assert figure.main(["--results", str(quick_results), "--out", str(tmp_path)]) == 0
    for f in ['schedules', 'schedules_curves', 'schedules_smoothness']:
        png, pdf = tmp_path / f"{f}.png", tmp_path / f"{f}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert pdf.read_bytes()[:5] == b"%PDF-"


def test_help_lists_the_common_options(capsys):
    with pytest.raises(SystemExit) as e:
        schedules.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--quick" in out and "--out" in out
