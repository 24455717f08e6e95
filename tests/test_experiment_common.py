"""experiments/common.py: result files (JSON + .npz, atomic, no pickle)."""

import numpy as np
import pytest

from experiments import common


def test_save_load_results_roundtrip(tmp_path):
    common.save_results(tmp_path, "x", {"a": np.float64(1.5), "b": [np.int64(2)], "c": float("nan")},
                        {"arr": np.arange(3.0)})
    meta, arrays = common.load_results(tmp_path, "x")
    assert meta == {"a": 1.5, "b": [2], "c": None}
    np.testing.assert_array_equal(arrays["arr"], np.arange(3.0))
    assert not list(tmp_path.glob(".*tmp*"))             # no temporary files left behind


def test_save_results_rejects_object_arrays_and_bad_names(tmp_path):
    with pytest.raises(ValueError, match="object"):
        common.save_results(tmp_path, "x", {}, {"o": np.array([None, 1], dtype=object)})
    with pytest.raises(ValueError, match="plain file stem"):
        common.save_results(tmp_path, "../x", {})
    with pytest.raises(FileNotFoundError, match="experiments.missing"):
        common.load_results(tmp_path, "missing")
