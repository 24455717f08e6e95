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
    assert all(len(tr["theta"]) == 3 for tr in meta["trajectories"].values())
    with np.load(tmp_path / "pes_schedule.npz") as arr:
        loss = arr["loss"]                      # rows: log decay, columns: log learning rate
        assert loss.shape == (3, 3) and np.all(np.isfinite(loss))
        # on this short run the largest learning rate trains most, the smallest hardly at all
        assert loss[:, -1].max() < loss[:, 0].min()
    paths = importlib.import_module("figures.pes_schedule").plot(tmp_path, tmp_path)
    assert all(p.stat().st_size > 1000 for p in paths)
