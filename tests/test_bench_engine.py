"""benchmarks.bench_engine --quick runs end to end (so the benchmark cannot rot) and reports
every issue 10 target with a verdict."""

import json
import math

from benchmarks import bench_engine


def test_quick_run_reports_every_target(tmp_path, capsys):
    out = tmp_path / "bench.json"
    bench_engine.main(["--quick", "--out", str(out)])
    printed = capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["meta"]["quick"] is True and doc["meta"]["clock"] == "wall"
    assert set(doc["verdicts"]) == {"a", "b", "c", "d"}
    for key, target in bench_engine.TARGETS.items():
        value = bench_engine.measured(key, doc["results"][key])
        assert math.isfinite(value) and value >= 0, key
        assert doc["verdicts"][key] == ("met" if value <= target else "MISSED")
        assert f"<= {target}: {doc['verdicts'][key]}" in printed
    labels = [row[0] for row in doc["table"]["rows"]]
    assert labels == ["(a)", "(b)", "(c)", "(d)", "(e)", "(k)"]
    # (a) is deterministic: the buffer stores within 1 % of log2(1/beta) even at quick sizes
    for row in doc["results"]["a"]["rows"]:
        assert abs(row["ratio"] - 1) < 0.01, row
    # (b) compares both parameter layouts, (d) prints its second-order bound beside it
    assert {"G=1", "G=100"} <= set(doc["results"]["b"])
    assert doc["results"]["d"]["bound"]["ratio"] > 1
    assert "second-order bound (grad + HVP) / grad" in printed
    # (e): exact needs less memory than storing the trajectory
    assert doc["results"]["e"]["ratio"] < 1


def test_unknown_figure_is_a_usage_error(capsys):
    import pytest
    with pytest.raises(SystemExit) as err:
        bench_engine.main(["--only", "az"])
    assert err.value.code == 2 and "unknown figure(s) ['z']" in capsys.readouterr().err
