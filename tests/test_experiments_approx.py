"""Quick modes of the approximate-method experiments and their figures (the CI smoke test)."""

import importlib
import json

import numpy as np
import pytest


@pytest.mark.parametrize("name", ["approx_horizon", "approx_ift_linear", "approx_cost"])
def test_quick_run_is_finite_and_plots(name, tmp_path):
    importlib.import_module(f"experiments.{name}").main(["--quick", "--out", str(tmp_path)])
    meta = json.loads((tmp_path / f"{name}.json").read_text())
    assert meta["results"] if "results" in meta else meta

    def numbers(x):
        if isinstance(x, dict):
            return [v for item in x.values() for v in numbers(item)]
        if isinstance(x, list):
            return [v for item in x for v in numbers(item)]
        return [x] if isinstance(x, (int, float)) and not isinstance(x, bool) else []

    values = np.array(numbers(meta), dtype=float)
    assert values.size > 0
    if name == "approx_ift_linear":
        assert np.all(np.isfinite(values))
    paths = importlib.import_module(f"figures.{name}").plot(tmp_path, tmp_path)
    assert all(p.stat().st_size > 1000 for p in paths)
