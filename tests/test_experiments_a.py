"""Experiments chaos / schedules / infobuffer, the sweep runner, figures and run_all (quick modes)."""

import json
import math

import numpy as np
import pytest

from experiments import chaos, common, infobuffer, run_all, schedules
from reversible.sweep import load_points, point_path, sweep


# ----------------------------------------------------------------------------- common


def test_save_load_results_roundtrip(tmp_path):
    common.save_results(tmp_path, "x", {"a": np.float64(1.5), "b": [np.int64(2)], "c": float("nan")},
                        {"arr": np.arange(3.0)})
    meta, arrays = common.load_results(tmp_path, "x")
    assert meta == {"a": 1.5, "b": [2], "c": None}
    np.testing.assert_array_equal(arrays["arr"], np.arange(3.0))
    assert not list(tmp_path.glob(".*tmp*"))             # no temporary files left behind


def test_save_results_rejects_object_arrays_and_bad_names(tmp_path):
    with pytest.raises(ValueError, match="object"):
        common.save_results(tmp_path, "x", {}, {"o": np.array([None, 1], dtype=object)})
    with pytest.raises(ValueError, match="plain file stem"):
        common.save_results(tmp_path, "../x", {})
    with pytest.raises(FileNotFoundError, match="experiments.missing"):
        common.load_results(tmp_path, "missing")


# ----------------------------------------------------------------------------- sweep

CALLS = []


def _square(point):
    CALLS.append(point["x"])
    return {"y": point["x"] ** 2, "vec": np.full(3, float(point["x"]))}


def test_sweep_serial_resumes_and_skips_finished_points(tmp_path):
    points = [{"x": i} for i in range(5)]
    CALLS.clear()
    res = sweep(_square, points, tmp_path, scheduler="serial", progress=False)
    assert [r["y"] for r in res] == [0, 1, 4, 9, 16]
    np.testing.assert_array_equal(res[3]["vec"], np.full(3, 3.0))
    assert sorted(CALLS) == [0, 1, 2, 3, 4]
    point_path(tmp_path, 2).unlink()                     # as if interrupted before point 2
    CALLS.clear()
    res2 = sweep(_square, points, tmp_path, scheduler="serial", progress=False)
    assert CALLS == [2]
    assert [r["y"] for r in res2] == [0, 1, 4, 9, 16]
    assert sorted(load_points(tmp_path)) == [0, 1, 2, 3, 4]


def test_sweep_refuses_a_different_sweep_in_the_same_directory(tmp_path):
    sweep(_square, [{"x": 1}], tmp_path, scheduler="serial", progress=False)
    with pytest.raises(ValueError, match="different sweep"):
        sweep(_square, [{"x": 2}], tmp_path, scheduler="serial", progress=False)


def test_sweep_on_a_dask_client(tmp_path):
    from dask.distributed import Client, LocalCluster
    points = [{"x": i} for i in range(4)]
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        res = sweep(_square, points, tmp_path, client=client, progress=False)
    assert [r["y"] for r in res] == [0, 1, 4, 9]
    rec = json.loads(point_path(tmp_path, 3).read_text())
    assert rec["point"] == {"x": 3} and rec["result"]["y"] == 9


@pytest.mark.slow
def test_sweep_on_an_embedded_local_cluster(tmp_path):
    res = sweep(_square, [{"x": i} for i in range(3)], tmp_path, n_workers=2, progress=False)
    assert [r["y"] for r in res] == [0, 1, 4]


# ----------------------------------------------------------------------------- experiments


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    assert chaos.main(["--quick", "--out", str(out), "--no-progress"]) == 0
    assert schedules.main(["--quick", "--out", str(out), "--no-progress"]) == 0
    assert infobuffer.main(["--quick", "--out", str(out)]) == 0
    return out


def test_chaos_quick_results_are_finite_and_well_formed(quick_results):
    meta, arr = common.load_results(quick_results, "chaos")
    assert meta["reversed_exactly"] and meta["failed_points"] == 0
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
    assert r["status"] == "ok" and r["reversed_exactly"]
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


def test_schedules_quick_results_are_finite_and_well_formed(quick_results):
    meta, arr = common.load_results(quick_results, "schedules")
    T, G = meta["T"], len(meta["groups"])
    assert G == 2 * (len(meta["layer_sizes"]) - 1)
    for k in ("log_alphas", "logit_betas"):
        assert arr[k].shape == (T, G) and np.all(np.isfinite(arr[k]))
    assert arr["log_scales"].shape == (G,)
    assert arr["history_log_alphas"].shape == (meta["meta_steps"], T, G)
    assert arr["objectives"].shape == (meta["meta_steps"],) and np.all(arr["objectives"] > 0)
    assert arr["curve_train_before"].shape == (T + 1,)
    assert arr["smooth_dalpha"].shape == (meta["smooth_seeds"], T, G)
    assert np.all(np.isfinite(arr["smooth_dalpha"])) and np.any(arr["smooth_dalpha"] != 0)
    assert meta["reversed_exactly"]
    # the learning curve's first point is the loss at w0, the same before and after
    # only if the initial scales did not move: they did move, so the curves differ
    assert not np.allclose(arr["curve_train_before"], arr["curve_train_after"])


def test_infobuffer_quick_bits_follow_the_information_bound(quick_results):
    meta, arr = common.load_results(quick_results, "infobuffer")
    assert meta["reversed_exactly"]
    np.testing.assert_allclose(arr["ideal_bits"], np.log2(1 / arr["betas"]), rtol=2e-3)
    assert np.all(arr["measured_bits"] >= arr["ideal_bits"] * (1 - 1e-9))
    np.testing.assert_allclose(arr["measured_bits"], arr["ideal_bits"], rtol=0.05)
    N, Ts = meta["N_memory"], arr["Ts"]
    np.testing.assert_array_equal(arr["trajectory_bytes"], 16.0 * N * Ts)
    assert np.all(arr["exact_ideal_bytes"] >= 16.0 * N)


def test_checkpoint_and_trajectory_memory_formulas():
    assert infobuffer.trajectory_bytes(10, 100) == 16_000
    assert infobuffer.checkpoint_bytes(10, 100) == 16.0 * 10 * (10 + 10)
    assert infobuffer.checkpoint_bytes(1, 10) == 16.0 * (3 + 4)       # k = ceil(sqrt(10)) = 4


@pytest.mark.parametrize("name, files", [
    ("chaos", ["chaos", "chaos_T"]),
    ("schedules", ["schedules", "schedules_curves", "schedules_smoothness"]),
    ("infobuffer", ["infobuffer"]),
])
def test_figures_write_png_and_pdf(quick_results, tmp_path, name, files):
    import importlib
    mod = importlib.import_module(f"figures.{name}")
    assert mod.main(["--results", str(quick_results), "--out", str(tmp_path)]) == 0
    for f in files:
        png, pdf = tmp_path / f"{f}.png", tmp_path / f"{f}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert pdf.read_bytes()[:5] == b"%PDF-"


def test_experiments_have_help(capsys):
    for mod in (chaos, schedules, infobuffer):
        with pytest.raises(SystemExit) as e:
            mod.main(["--help"])
        assert e.value.code == 0
    assert "--quick" in capsys.readouterr().out


def test_run_all_discovers_experiments():
    names = run_all.discover()
    assert names[:3] == ["infobuffer", "chaos", "schedules"]
    assert "common" not in names and "run_all" not in names
    with pytest.raises(SystemExit):
        run_all.main(["--only", "no_such_experiment"])


@pytest.mark.slow
def test_run_all_redraws_figures(quick_results, tmp_path):
    rc = run_all.main(["--out", str(quick_results), "--figures-out", str(tmp_path),
                       "--figures-only", "--only", "infobuffer"])
    assert rc == 0 and (tmp_path / "infobuffer.png").is_file()
