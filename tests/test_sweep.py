"""reversible.sweep: resumable sweeps, serially and on dask.distributed."""

import json

import numpy as np
import pytest

from reversible.sweep import load_points, point_path, sweep

CALLS = []


def _square(point):
    CALLS.append(point["x"])
    return {"y": point["x"] ** 2, "vec": np.full(3, float(point["x"]))}


def test_sweep_serial_resumes_and_skips_finished_points(tmp_path):
    points = [{"x": i} for i in range(5)]
    CALLS.clear()
    res = sweep(_square, points, tmp_path, scheduler="serial", progress=False)
    assert [r["y"] for r in res] == [0, 1, 4, 9, 16]
    np.testing.assert_array_equal(res[3]["vec"], np.full(3, 3.0))
    assert sorted(CALLS) == [0, 1, 2, 3, 4]
    point_path(tmp_path, 2).unlink()                     # as if interrupted before point 2
    CALLS.clear()
    res2 = sweep(_square, points, tmp_path, scheduler="serial", progress=False)
    assert CALLS == [2]
    assert [r["y"] for r in res2] == [0, 1, 4, 9, 16]
    assert sorted(load_points(tmp_path)) == [0, 1, 2, 3, 4]


def test_sweep_refuses_a_different_sweep_in_the_same_directory(tmp_path):
    sweep(_square, [{"x": 1}], tmp_path, scheduler="serial", progress=False)
    with pytest.raises(ValueError, match="different sweep"):
        sweep(_square, [{"x": 2}], tmp_path, scheduler="serial", progress=False)


def test_sweep_on_a_dask_client(tmp_path):
    from dask.distributed import Client, LocalCluster
    points = [{"x": i} for i in range(4)]
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        res = sweep(_square, points, tmp_path, client=client, progress=False)
    assert [r["y"] for r in res] == [0, 1, 4, 9]
    rec = json.loads(point_path(tmp_path, 3).read_text())
    assert rec["point"] == {"x": 3} and rec["result"]["y"] == 9


@pytest.mark.slow
def test_sweep_on_an_embedded_local_cluster(tmp_path):
    res = sweep(_square, [{"x": i} for i in range(3)], tmp_path, n_workers=2, progress=False)
    assert [r["y"] for r in res] == [0, 1, 4]
