"""experiments/online_graded.py: online estimators graded against the exact window
hypergradient along a driven run (quick mode)."""

import importlib
import json

import numpy as np

from experiments import online_graded


def test_quick_run_grades_estimators_against_the_exact_window_and_plots(tmp_path):
    online_graded.main(["--quick", "--out", str(tmp_path)])
    meta = json.loads((tmp_path / "online_graded.json").read_text())
    rows = meta["rows"]
    methods = ["unroll1_gtgv", "unroll5", "adaptive10_5", "clip0.05", "clip1e12", "hd"]
    assert [(r["step"], r["method"]) for r in rows] == [(s, m) for s in (0, 10) for m in methods]
    by = {(r["step"], r["method"]): r for r in rows}
    for s in (0, 10):
        # never-clipped forward mode over the window is the exact hypergradient
        assert abs(by[s, "clip1e12"]["cos_l2"] - 1) < 1e-8 and abs(by[s, "clip1e12"]["ratio_lr"] - 1) < 1e-6
        # adaptive(W, 5) is the exact hypergradient of the last 5 steps: unroll(5)'s estimate
        assert np.isclose(by[s, "adaptive10_5"]["ratio_l2"], by[s, "unroll5"]["ratio_l2"], rtol=1e-8)
        # blind spots are recorded as missing, not as numbers
        assert by[s, "hd"]["cos_l2"] is None and by[s, "unroll1_gtgv"]["ratio_lr"] is None
    with np.load(tmp_path / "online_graded.npz") as arrays:
        assert arrays["exact"].shape == (2, 5) and np.all(np.isfinite(arrays["exact"]))
    fig = importlib.import_module("figures.online_graded")
    paths = fig.plot(tmp_path, tmp_path)
    assert sorted(p.suffix for p in paths) == [".pdf", ".png"]
    assert all(p.stat().st_size > 1000 for p in paths)
