"""``reversible compare``: tables per horizon, compare.json, a readable compare.png, progress."""

import json

import numpy as np
import pytest

from reversible import cli, compare_command


def test_cli_writes_table_and_figure(tmp_path, capsys):
    rc = cli.main(["compare", "--T", "4", "8", "--methods", "exact", "drmad", "unrolled",
                   "--hidden", "8", "--n-train", "200", "--no-memory", "--out", str(tmp_path)])
    assert rc == 0
    out = json.loads((tmp_path / "compare.json").read_text())
    assert [r["meta"]["T"] for r in out["results"]] == [4, 8]
    assert [r["meta"]["layer_sizes"] for r in out["results"]] == [[64, 8, 10]] * 2
    rows = {r["method"]: r for r in out["results"][0]["rows"]}
    assert rows["exact"]["cosine"] == pytest.approx(1.0)
    assert rows["unrolled"]["rel_error"] < 1e-7
    assert (tmp_path / "compare.png").stat().st_size > 1000
    captured = capsys.readouterr()
    assert "== T = 8" in captured.out and "drmad" in captured.out
    assert "horizons" in captured.err and "T=4" in captured.err        # the progress bars


def _results(curves):
    """compare.json-like results from {method: [(cosine, norm_ratio) per T]}."""
    Ts = [10, 30, 100]
    return [{"meta": {"T": T}, "reference": "exact",
             "rows": [{"method": m, "error": None, "cosine": c[i][0], "norm_ratio": c[i][1]}
                      for m, c in curves.items()]} for i, T in enumerate(Ts)]


def test_failed_methods_leave_gaps_not_zeros(tmp_path):
    results = _results({"exact": [(1.0, 1.0)] * 3, "cg": [(0.5, 0.1)] * 3})
    results[1]["rows"][1] = {"method": "cg", "error": "ValueError: boom"}
    series = compare_command.method_curve(results, "cg", "cosine")
    assert series[0] == 0.5 and np.isnan(series[1])
    path = compare_command.plot_horizons(results, str(tmp_path / "c.png"))
    assert (tmp_path / "c.png").stat().st_size > 1000 and path.endswith("c.png")
