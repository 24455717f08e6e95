"""experiments/long_horizon.py: exact hypergradients over 10^4 steps, and the doc tables filled
from its results (quick mode)."""

import importlib
import json


def test_long_horizon_quick(tmp_path):
    importlib.import_module("experiments.long_horizon").main(["--quick", "--out", str(tmp_path)])
    meta = json.loads((tmp_path / "long_horizon.json").read_text())
    first = [r for r in meta["rows"] if r["alpha"] == 0.3]
    assert [r["T"] for r in first] == [10, 20, 40]
    for r in first:
        assert r["unrolled_rel_diff"] < 1e-6          # exact agrees with autograd's unrolled loop
    for r in meta["rows"]:
        assert r.get("error") or (r["norm_alphas"] > 0 and r["peak_mb"] > 0)
    paths = importlib.import_module("figures.long_horizon").plot(tmp_path, tmp_path)
    assert all(p.stat().st_size > 1000 for p in paths)



def test_doc_tables_render_from_results(tmp_path):
    """docs/tables.py renders both experiments' JSON through their ``tables`` functions."""
    import importlib.util
    import pathlib

    from experiments.common import save_results
    rows = [{"alpha": 0.3, "T": 10, "seconds": 1.0, "peak_mb": 2.0, "buffer_mb": 0.5, "norm_log_alpha": 3.0,
             "norm_alphas": 4.0, "stored_trajectory_mb": 5.0}]
    save_results(tmp_path, "long_horizon", {"experiment": "long_horizon", "rows": rows})
    root = pathlib.Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("doc_tables", root / "docs" / "tables.py")
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    text = tables.render("long_horizon", tmp_path)
    assert "| 0.3 | 10 | 1 | 2 | 0.5 | - | (-) | 5 | 3 | 4 |" in text
