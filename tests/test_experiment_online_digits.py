"""experiments/online_digits.py: online L2 tuning of a digits MLP (quick mode)."""

import json

import numpy as np

from experiments import online_digits


def test_quick_run_tunes_l2_toward_the_better_grid_value(tmp_path):
    online_digits.main(["--quick", "--out", str(tmp_path)])
    meta = json.loads((tmp_path / "online_digits.json").read_text())
    assert meta["experiment"] == "online_digits" and meta["sizes"] == [64, 32, 10]
    methods, inits = ["unroll5", "clip1", "adaptive20_20"], [1e-6, 1e-1]
    assert [(r["method"], r["lam0"]) for r in meta["rows"]] == [(m, l) for m in methods for l in inits]
    grid = {g["lam"]: g["val_ce_final"] for g in meta["grid"]}
    assert meta["grid_best"]["lam"] == min(grid, key=grid.get)
    for r in meta["rows"]:
        if r["lam0"] == 1e-1:
            # the small L2 is better on this problem (grid), so every method lowers a large one
            assert grid[1e-4] < grid[1e-2] and r["lam_final"] < 0.9 * r["lam0"], r["method"]
    for m in methods:
        mine = [r["val_ce_final"] for r in meta["rows"] if r["method"] == m]
        assert meta["per_method"][m]["val_ce_final"] == np.mean(mine)
