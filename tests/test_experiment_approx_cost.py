"""experiments/approx_cost.py: time and memory of every method against the horizon (quick)."""

import json

from experiments import approx_cost


def test_quick_run_times_every_method_and_plots(tmp_path):
    approx_cost.main(["--quick", "--out", str(tmp_path), "--T", "5", "10",
                      "--methods", "exact", "unrolled", "drmad", "identity"])
    meta = json.loads((tmp_path / "approx_cost.json").read_text())
    assert [r["T"] for r in meta["results"]] == [5, 10]
    for result in meta["results"]:
        rows = {r["method"]: r for r in result["rows"]}
        assert list(rows) == ["exact", "unrolled", "drmad", "identity"]
        assert rows["exact"]["time_ratio"] == 1.0 and rows["exact"]["memory_ratio"] == 1.0
        assert rows["unrolled"]["rel_error"] < 1e-7            # the same derivative, another way
        for r in rows.values():
            assert r["error"] is None and r["seconds"] > 0 and r["peak_mb"] > 0
    from figures import approx_cost as figure
    paths = figure.plot(tmp_path, tmp_path)
    assert sorted(p.suffix for p in paths) == [".pdf", ".png"]
    assert all(p.stat().st_size > 1000 for p in paths)
