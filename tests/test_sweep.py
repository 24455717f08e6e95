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


def test_point_files_record_the_digest_of_their_arrays(tmp_path):
    sweep(_square, [{"x": 2}], tmp_path, scheduler="serial", progress=False)
    import hashlib
    rec = json.loads(point_path(tmp_path, 0).read_text())
    data = point_path(tmp_path, 0).with_suffix(".npz").read_bytes()
    assert rec["arrays"] == {"keys": ["vec"], "sha256": hashlib.sha256(data).hexdigest()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["point-000000.json", "point-000000.npz",
                                                          "sweep.json"]


def test_points_without_arrays_need_no_npz(tmp_path):
    res = sweep(_scalar_only, [{"x": 3}], tmp_path, scheduler="serial", progress=False)
    assert res == [{"y": 6}]
    assert load_points(tmp_path) == {0: ({"x": 3}, {"y": 6})}


def _scalar_only(point):
    return {"y": 2 * point["x"]}


def test_missing_dask_names_the_extra(monkeypatch, tmp_path):
    import sys
    monkeypatch.setitem(sys.modules, "dask.distributed", None)
    with pytest.raises(ImportError, match=r'pip install "reversible-learning\[sweep\]"'):
        sweep(_square, [{"x": 1}], tmp_path, progress=False)


def test_importing_sweep_does_not_import_dask():
    import pathlib
    import subprocess
    import sys
    code = "import sys, reversible.sweep; print('dask' in sys.modules)"
    repo = pathlib.Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=repo)
    assert out.stdout.strip() == "False"


def _fails_on_two(point):
    if point["x"] == 2:
        raise KeyError("no such thing")
    return {"y": point["x"]}


def test_a_failing_point_on_a_dask_client_is_named(tmp_path):
    from dask.distributed import Client, LocalCluster

    from reversible.sweep import SweepError
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        with pytest.raises(SweepError, match=r"sweep point 2 \{'x': 2\} failed: KeyError"):
            sweep(_fails_on_two, [{"x": i} for i in range(4)], tmp_path, client=client,
                  progress=False)
