"""experiments/chaos.py: loss and exact hypergradient against the learning rate (quick mode)."""

import math

import numpy as np
import pytest

from experiments import chaos, common


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    assert chaos.main(["--quick", "--out", str(out), "--no-progress"]) == 0
    return out


def test_chaos_quick_results_are_finite_and_well_formed(quick_results):
    meta, arr = common.load_results(quick_results, "chaos")
    assert meta["reversed_exactly"] is True and meta["failed_points"] == 0
    assert arr["log_alpha"].shape == arr["loss"].shape == arr["grad"].shape == (meta["points"],)
    assert np.all(np.isfinite(arr["loss"])) and np.all(np.isfinite(arr["grad"]))
    assert arr["T_loss"].shape == arr["T_grad"].shape == (len(meta["Ts"]), meta["T_points"])
    assert list(arr["T_values"]) == meta["Ts"]
    assert (quick_results / "sweeps" / f"chaos-T{meta['T']}" / "sweep.json").is_file()


def test_chaos_hypergradient_matches_finite_difference():
    data_args = (("mnist_dir", None), ("omniglot_zip", None), ("seed", 0), ("n_train", 100),
                 ("batch", 25), ("hidden", (8,)))
    p = {"log_alpha": 0.3, "T": 4, "beta": 0.9, "log_scale": -2.0, "seed": 0}
    r = chaos.run_point(p, data_args)
    h = 1e-4
    up = chaos.run_point(dict(p, log_alpha=p["log_alpha"] + h), data_args)["loss"]
    dn = chaos.run_point(dict(p, log_alpha=p["log_alpha"] - h), data_args)["loss"]
    assert r["status"] == "ok" and r["reversed_exactly"] is True
    assert r["grad"] == pytest.approx((up - dn) / (2 * h), rel=1e-4)


def test_chaos_divergent_point_is_recorded_as_a_gap():
    data_args = (("mnist_dir", None), ("omniglot_zip", None), ("seed", 0), ("n_train", 100),
                 ("batch", 25), ("hidden", (8,)))
    with np.errstate(all="ignore"):
        r = chaos.run_point({"log_alpha": 12.0, "T": 4, "beta": 0.9, "log_scale": -2.0,
                             "seed": 0}, data_args)
    assert r["status"].startswith("FixedPointOverflowError")
    assert math.isnan(r["loss"]) and math.isnan(r["grad"])


def test_onset_of_chaos_detects_where_gradient_and_slope_disagree():
    x = np.linspace(0, 2, 201)
    f, g = x ** 2, 2 * x
    assert math.isnan(chaos.onset_of_chaos(x, f, g))
    g_bad = g.copy()
    g_bad[x > 1.5] = np.random.default_rng(0).normal(0, 100, np.sum(x > 1.5))
    assert 1.45 <= chaos.onset_of_chaos(x, f, g_bad) <= 1.55


def test_figures_write_png_and_pdf(quick_results, tmp_path):
    from figures import chaos as figure
    assert figure.main(["--results", str(quick_results), "--out", str(tmp_path)]) == 0
    for f in ['chaos', 'chaos_T']:
        png, pdf = tmp_path / f"{f}.png", tmp_path / f"{f}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert pdf.read_bytes()[:5] == b"%PDF-"


def test_help_lists_the_common_options(capsys):
    with pytest.raises(SystemExit) as e:
        chaos.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--quick" in out and "--out" in out
