"""Resumable parameter sweeps on ``dask.distributed``.

A sweep evaluates ``fn(point)`` for every ``point`` (a dict of JSON values)
and keeps each finished point on disk as ``point-<index>.json`` (plus
``point-<index>.npz`` for its array results) in ``out_dir``.  Rerunning the
same sweep skips the points already there, so an interrupted sweep resumes
where it stopped.  Points run on an embedded ``LocalCluster`` by default, on
an existing cluster given by its scheduler address (e.g. one started by
dask-jobqueue on an HPC system), or in-process with ``scheduler="serial"``.
Results are written by the client, so workers need no shared file system.
"""

import json
import os
import pathlib

import numpy as np

import contextlib

__all__ = ["sweep", "open_client", "load_points", "point_path"]

_MANIFEST = "sweep.json"


def point_path(out_dir, index):
    """Path of the JSON file holding point ``index`` of the sweep in ``out_dir``."""
    return pathlib.Path(out_dir) / f"point-{int(index):06d}.json"


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return x


def _split_result(result, index):
    """Split a point's result into JSON scalars and numpy arrays (ndim >= 1)."""
    if not isinstance(result, dict):
        raise TypeError(f"sweep: fn must return a dict; point {index} returned "
                        f"{type(result).__name__}")
    scalars, arrays = {}, {}
    for k, v in result.items():
        if isinstance(v, np.ndarray) and v.ndim >= 1:
            if v.dtype == object:
                raise TypeError(f"sweep: point {index} result {k!r} is an object array")
            arrays[k] = v
        else:
            scalars[k] = _jsonable(v)
    return scalars, arrays


def _write_point(out_dir, index, point, result):
    scalars, arrays = _split_result(result, index)
    path = point_path(out_dir, index)
    if arrays:
        tmp = path.with_name(f".{path.stem}.tmp.npz")
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path.with_suffix(".npz"))
    tmp = path.with_name(f".{path.stem}.tmp.json")
    tmp.write_text(json.dumps({"index": int(index), "point": point, "result": scalars}))
    os.replace(tmp, path)          # the JSON is written last: it marks the point done


def _read_point(out_dir, index):
    path = point_path(out_dir, index)
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    result = dict(rec.get("result", {}))
    npz = path.with_suffix(".npz")
    if npz.is_file():
        try:
            with np.load(npz, allow_pickle=False) as f:
                result.update({k: f[k] for k in f.files})
        except (OSError, ValueError):
            return None
    return rec.get("point"), result


def load_points(out_dir):
    """All finished points in ``out_dir``: a dict ``index -> (point, result)``."""
    out = {}
    for p in sorted(pathlib.Path(out_dir).glob("point-*.json")):
        index = int(p.stem.split("-")[1])
        rec = _read_point(out_dir, index)
        if rec is not None:
            out[index] = rec
    return out


def _check_manifest(out_dir, points, name):
    path = pathlib.Path(out_dir) / _MANIFEST
    manifest = {"name": name, "points": points}
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("points") != points:
            raise ValueError(
                f"{out_dir} holds a different sweep ({len(old.get('points', []))} points, "
                f"name {old.get('name')!r}); use another directory or delete it to start over")
    else:
        path.write_text(json.dumps(manifest))


@contextlib.contextmanager
def open_client(scheduler=None, n_workers=None, threads_per_worker=1):
    """Context manager yielding a dask ``Client`` (or None for ``scheduler="serial"``).

    ``None`` starts an embedded ``LocalCluster`` of ``n_workers`` processes
    (default: one per CPU) and closes it on exit; a string connects to that
    scheduler address.  Pass the client to several :func:`sweep` calls to
    start the cluster once.
    """
    if scheduler == "serial":
        yield None
        return
    from dask.distributed import Client, LocalCluster
    cluster = None
    if scheduler is None:
        n = max(1, n_workers or os.cpu_count() or 1)
        cluster = LocalCluster(n_workers=n, threads_per_worker=threads_per_worker,
                               processes=True, dashboard_address=None)
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def sweep(fn, points, out_dir, scheduler=None, n_workers=None, threads_per_worker=1,
          progress=True, name="sweep", retries=0, client=None):
    """Evaluate ``fn(point)`` for each point, resuming from ``out_dir``; return results in order.

    ``points``: a list of dicts of JSON values (the sweep's identity: rerunning
    with other points in the same ``out_dir`` raises).  ``fn`` must be
    importable by the workers (a module-level function) and return a dict
    whose values are JSON scalars/lists or numpy arrays.  ``scheduler``:
    ``None`` starts a ``LocalCluster`` of ``n_workers`` processes (default:
    one per CPU, at most one per point), a string is the address of an
    existing scheduler (``"tcp://host:8786"``), ``"serial"`` runs in this
    process; ``client``, if given, is used instead (see :func:`open_client`).
    Returns a list of result dicts (arrays restored from ``.npz``).
    """
    points = [_jsonable(dict(p)) for p in points]
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_manifest(out_dir, points, name)
    results = [None] * len(points)
    todo = []
    for i in range(len(points)):
        rec = _read_point(out_dir, i) if point_path(out_dir, i).is_file() else None
        if rec is not None and rec[0] == points[i]:
            results[i] = rec[1]
        else:
            todo.append(i)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(points), initial=len(points) - len(todo), desc=name, leave=False)
    try:
        if not todo:
            pass
        elif client is not None:
            _collect(client, fn, points, todo, out_dir, results, bar, retries)
        elif scheduler == "serial":
            for i in todo:
                res = fn(points[i])
                _write_point(out_dir, i, points[i], res)
                results[i] = _read_point(out_dir, i)[1]
                if bar is not None:
                    bar.update(1)
        else:
            _run_distributed(fn, points, todo, out_dir, results, scheduler,
                             n_workers, threads_per_worker, bar, retries)
    finally:
        if bar is not None:
            bar.close()
    return results


def _run_distributed(fn, points, todo, out_dir, results, scheduler, n_workers,
                     threads_per_worker, bar, retries):
    if scheduler is None and n_workers is None:
        n_workers = max(1, min(os.cpu_count() or 1, len(todo)))
    with open_client(scheduler, n_workers, threads_per_worker) as client:
        _collect(client, fn, points, todo, out_dir, results, bar, retries)


def _collect(client, fn, points, todo, out_dir, results, bar, retries):
    from dask.distributed import as_completed
    futures = {}
    for i in todo:
        fut = client.submit(fn, points[i], pure=False, retries=retries)
        futures[fut] = i
    try:
        for fut in as_completed(list(futures)):
            i = futures[fut]
            res = fut.result()          # re-raises the worker's exception with its traceback
            _write_point(out_dir, i, points[i], res)
            results[i] = _read_point(out_dir, i)[1]
            if bar is not None:
                bar.update(1)
    finally:
        client.cancel(list(futures))
