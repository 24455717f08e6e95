"""benchmarks/bench_gpu.py: its Adam step row runs end to end on the CPU emulation of the
kernels (so it cannot rot where no GPU is lent), and without CuPy the script says why it cannot
run instead of failing on an import."""

import json
import pathlib
import subprocess
import sys

import numpy as np
from _gpu_import import load_gpu  # noqa: F401  (tests/ is on sys.path; loads this checkout's gpu/)

REPO = pathlib.Path(__file__).resolve().parents[1]


def _bench():
    load_gpu()
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_gpu", REPO / "benchmarks" / "bench_gpu.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_adam_step_row_on_the_emulation_reverses_exactly(emu):
    row = _bench().adam_step(np, 300, T=3, reps=2, backend=emu)
    assert row["reversed_exactly"] is True and row["errors"] == []
    assert row["N"] == 300 and row["forward_over_plain"] > 0 and row["reverse_over_plain"] > 0
    json.dumps(row)                                   # the row goes to the JSON as it is


def test_without_cupy_the_script_exits_with_the_install_line(tmp_path):
    out = tmp_path / "bench.json"
    code = ("import runpy, sys; sys.modules['cupy'] = None; "
            f"sys.argv = ['bench_gpu.py', '--adam', '--out', {str(out)!r}]; "
            f"runpy.run_path({str(REPO / 'benchmarks' / 'bench_gpu.py')!r}, run_name='__main__')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(REPO))
    assert res.returncode == 2, res.stderr
    assert "cannot run here" in res.stderr and "reversible-learning[gpu]" in res.stderr
    assert not out.exists()
