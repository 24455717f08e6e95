"""benchmarks/bench_adam.py --quick runs, writes its JSON, and meets the targets that do not
depend on machine load (information-buffer bits, memory)."""

import json

from benchmarks import bench_adam


def test_quick_benchmark_runs_and_reports(tmp_path, capsys):
    out = tmp_path / "bench_adam.json"
    bench_adam.main(["--quick", "--out", str(out)])
    res = json.loads(out.read_text())
    assert set(res) >= {"a", "b", "c", "d"}
    for row in res["c"]:
        assert abs(row["ratio"] - 1) < 1e-3, row
    assert res["d"]["peak_bytes"]["exact"] < res["d"]["peak_bytes"]["unrolled"]
    assert res["b"]["second_order"]["bound"] > 2.0          # one grad forward, grad + HVP back
    text = capsys.readouterr().out
    assert "(a) one exact Adam step" in text and "second-order-product bound" in text
