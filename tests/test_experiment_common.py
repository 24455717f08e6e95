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


def test_timed_with_peak_memory_sees_a_transient_allocation():
    import sys
    import time
    from experiments.common import timed_with_peak_memory

    def allocate():
        a = np.ones(64 * 2 ** 20 // 8)          # 64 MiB, touched
        time.sleep(0.05)
        return float(a.sum())

    value, seconds, peak = timed_with_peak_memory(allocate)
    assert value == 64 * 2 ** 20 // 8 and seconds >= 0.05
    if sys.platform.startswith("linux"):
        assert 60 <= peak < 200
        _, _, idle = timed_with_peak_memory(lambda: time.sleep(0.02))
        assert idle < 8
