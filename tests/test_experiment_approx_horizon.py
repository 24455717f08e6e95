"""experiments/approx_horizon.py: approximate against exact hypergradients over horizons (quick)."""

import json

import numpy as np

from experiments import approx_horizon


def test_quick_run_grades_every_method_at_every_horizon_and_plots(tmp_path):
    approx_horizon.main(["--quick", "--out", str(tmp_path)])
    meta = json.loads((tmp_path / "approx_horizon.json").read_text())
    assert [r["T"] for r in meta["results"]] == [20, 200]
    for result in meta["results"]:
        T = result["T"]
        rows = {r["method"].split(":")[0]: r for r in result["rows"]}
        assert set(rows) == {"exact", "drmad", "drmad_hybrid", "truncated", "identity"}
        assert all(r["error"] is None for r in rows.values())
        assert abs(rows["exact"]["cosine"] - 1) < 1e-12 and rows["exact"]["rel_error"] == 0.0
        # DrMAD follows the exact direction closely on this short, stable run; truncation
        # to K = T / 10 steps and the identity (no backward pass) do not
        assert rows["drmad"]["cosine"] > 0.99, T
        assert rows["identity"]["cosine"] < rows["truncated"]["cosine"] < rows["drmad"]["cosine"]
    with np.load(tmp_path / "approx_horizon.npz") as arrays:
        assert arrays["T20_exact_log_alpha"].shape == (len(meta["layer_sizes"]) * 2 - 2,)
    from figures import approx_horizon as figure
    paths = figure.plot(tmp_path, tmp_path)
    assert sorted(p.suffix for p in paths) == [".pdf", ".png"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_methods_for_a_horizon_use_the_fraction():
    assert approx_horizon.methods_for(200, 0.1) == [
        "exact", "drmad", "drmad_hybrid:K=20", "truncated:K=20", "identity"]
    assert approx_horizon.methods_for(3, 0.1)[2] == "drmad_hybrid:K=1"
