"""experiments/pes_schedule.py: PES's learning-rate-schedule task, estimators graded against
the exact hypergradient (quick mode)."""

import importlib
import json

import numpy as np
import pytest


def test_pes_schedule_quick(tmp_path):
    importlib.import_module("experiments.pes_schedule").main(["--quick", "--out", str(tmp_path)])
    meta = json.loads((tmp_path / "pes_schedule.json").read_text())
    rows = meta["table"]
    names = {r["estimator"] for r in rows}
    assert names == {"exact", "smoothed", "es", "pes", "truncated10", "truncated100", "drmad"}
    for r in rows:
        assert np.all(np.isfinite(r["gradient"])) and r["seconds"] > 0
        if r["estimator"] == "exact":
            assert r["vs_exact"]["cosine"] == pytest.approx(1.0)
        if r["estimator"] == "truncated100":        # K >= T: the full reverse pass
            assert r["vs_exact"]["cosine"] == pytest.approx(1.0, abs=1e-9)
    traj = meta["trajectories"]
    assert set(traj) == names | {"pes_online"}
    assert all(len(tr["theta"]) == 3 and len(tr["loss"]) == 3 for name, tr in traj.items()
               if name != "pes_online")          # theta0, then one per meta-step
    online = traj["pes_online"]                  # one theta update per truncation (T 12, K 10)
    assert online["updates_per_episode"] == 2 and len(online["theta"]) == 1 + 2
    assert all(r["peak_mb"] is not None and r["peak_mb"] >= 0 for r in rows)
    with np.load(tmp_path / "pes_schedule.npz") as arr:
        loss = arr["loss"]                      # rows: log decay, columns: log learning rate
        assert loss.shape == (3, 3) and np.all(np.isfinite(loss))
        # on this short run the largest learning rate trains most, the smallest hardly at all
        assert loss[:, -1].max() < loss[:, 0].min()
    paths = importlib.import_module("figures.pes_schedule").plot(tmp_path, tmp_path)
    assert all(p.stat().st_size > 1000 for p in paths)


def test_the_batched_mlp_gradient_is_autograds_per_particle():
    ps = importlib.import_module("experiments.pes_schedule")
    from reversible import data as rdata
    task = ps.Task(rdata.load_dataset("digits"), 5, [7, 6], 20, 300, 0)
    p = task.problem()
    W = p.w0 + 0.3 * np.random.default_rng(0).standard_normal((3, p.N))
    for t in (0, 4):
        ref = np.stack([p.grad(w, None, t) for w in W])
        np.testing.assert_allclose(task.stacked_grad(W, None, t), ref, rtol=1e-12, atol=1e-15)


def test_online_pes_updates_theta_after_every_truncation(tmp_path):
    ps = importlib.import_module("experiments.pes_schedule")
    from reversible import data as rdata
    args = ps.resolve(ps.parse_experiment_args(ps.NAME, "", ps.add_arguments,
                                               ["--quick", "--out", str(tmp_path), "--pes-K", "3",
                                                "--online-episodes", "2"]))
    task = ps.Task(rdata.load_dataset("digits"), 7, [4], 20, 300, 0)
    out = ps.online_pes(task, args)
    assert out["updates_per_episode"] == 3                 # truncations 3 + 3 + 1
    theta = out["theta"]
    assert theta.shape == (1 + 2 * 3, 2) and np.all(np.diff(theta, axis=0) != 0)
    assert np.array_equal(theta, ps.online_pes(task, args)["theta"])     # seeded


def test_particle_study_grades_each_count(tmp_path):
    ps = importlib.import_module("experiments.pes_schedule")
    assert ps.main(["--quick", "--out", str(tmp_path), "--T", "6", "--particle-study", "2", "6"]) == 0
    saved = json.loads((tmp_path / "pes_schedule_particles.json").read_text())
    assert [(r["estimator"], r["particles"]) for r in saved["rows"]] == \
        [("es", 2), ("pes", 2), ("es", 6), ("pes", 6)]
    assert not (tmp_path / "pes_schedule.json").exists()       # the main results are untouched
    text = ps.particle_table(saved)
    assert text.count("\n| 6 | ") == 4 and "--particle-study 2 6" in text
