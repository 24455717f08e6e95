"""Resumable parameter sweeps, on ``dask.distributed`` or in-process.

A sweep evaluates ``fn(point)`` for every ``point`` (a dict of JSON values)
and keeps each finished point on disk as ``point-<index>.json`` (plus
``point-<index>.npz`` for its array results) in ``out_dir``, next to a
manifest ``sweep.json`` listing every point.  Rerunning the same sweep skips
the points already there, so an interrupted sweep resumes where it stopped.
Points run on an embedded ``LocalCluster`` by default, on an existing cluster
given by its scheduler address (e.g. one started by dask-jobqueue on an HPC
system), or in-process with ``scheduler="serial"``.  Results are written by
the client, so workers need no shared file system.

Every write is atomic (unique temporary file, fsync, rename).  A point's JSON
records the SHA-256 of its ``.npz``; a point whose files were deleted,
truncated or altered is recomputed with a :class:`SweepWarning` naming it,
and :func:`load_points` refuses it with a :class:`SweepError`.  A damaged
manifest and a point whose ``fn`` raises are errors naming the file or the
point.  dask is imported only when a cluster is used (the ``sweep`` extra:
``pip install "reversible-learning[sweep]"``).
"""

import contextlib
import hashlib
import io
import json
import os
import pathlib
import warnings

import numpy as np

from .atomic import atomic_write
from .errors import ReversibleError

__all__ = ["sweep", "open_client", "load_points", "point_path", "SweepError", "SweepWarning"]

_MANIFEST = "sweep.json"


class SweepError(ReversibleError, ValueError):
    """A sweep directory is damaged or belongs to another sweep, or a point's function failed."""


class SweepWarning(UserWarning):
    """A damaged point was found and is being recomputed."""


def point_path(out_dir, index):
    """Path of the JSON file holding point ``index`` of the sweep in ``out_dir``."""
    return pathlib.Path(out_dir) / f"point-{int(index):06d}.json"


def _dask_distributed():
    try:
        import dask.distributed
    except ImportError as err:
        raise ImportError(
            "running a sweep on a cluster needs dask.distributed: "
            'pip install "reversible-learning[sweep]" (or pass scheduler="serial" to run the '
            f"points in this process) [{err}]") from err
    return dask.distributed


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
    record = {"index": int(index), "point": point, "result": scalars}
    if arrays:
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        data = buf.getvalue()
        atomic_write(path.with_suffix(".npz"), lambda fh: fh.write(data))
        record["arrays"] = {"keys": sorted(arrays), "sha256": hashlib.sha256(data).hexdigest()}
    text = json.dumps(record)
    atomic_write(path, lambda fh: fh.write(text), mode="w")   # written last: marks the point done


def _read_point(out_dir, index):
    """``(point, result)`` of a finished point; SweepError naming the file if it is damaged."""
    path = point_path(out_dir, index)
    try:
        rec = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise SweepError(f"sweep point {index}: {path} is unreadable or truncated "
                         f"({type(err).__name__}: {err})") from None
    if not (isinstance(rec, dict) and rec.get("index") == index and isinstance(rec.get("point"), dict)
            and isinstance(rec.get("result"), dict)):
        raise SweepError(f"sweep point {index}: {path} is not a point record of this sweep "
                         "(fields index, point, result)")
    result = dict(rec["result"])
    npz = path.with_suffix(".npz")
    arrays = rec.get("arrays")
    if arrays is None:
        if npz.exists():
            raise SweepError(f"sweep point {index}: {path} records no arrays but {npz.name} exists "
                             "(written by an older reversible, or damaged)")
        return rec["point"], result
    try:
        data = npz.read_bytes()
    except FileNotFoundError:
        raise SweepError(f"sweep point {index} {rec['point']}: its arrays {arrays.get('keys')} "
                         f"should be in {npz}, which is missing") from None
    if hashlib.sha256(data).hexdigest() != arrays.get("sha256"):
        raise SweepError(f"sweep point {index} {rec['point']}: {npz} is truncated or altered "
                         "(its SHA-256 differs from the one recorded in "
                         f"{path.name})")
    with np.load(io.BytesIO(data), allow_pickle=False) as f:
        result.update({k: f[k] for k in f.files})
    return rec["point"], result


def load_points(out_dir):
    """All finished points in ``out_dir``: a dict ``index -> (point, result)``.

    Raises :class:`SweepError` naming the file if a point's files are damaged
    or incomplete (rerun the sweep to recompute it).
    """
    out = {}
    for p in sorted(pathlib.Path(out_dir).glob("point-*.json")):
        try:
            index = int(p.stem.split("-", 1)[1])
        except ValueError:
            continue
        try:
            out[index] = _read_point(out_dir, index)
        except SweepError as err:
            raise SweepError(f"{err}; rerun the sweep to recompute this point") from None
    return out


def _check_manifest(out_dir, points, name):
    path = pathlib.Path(out_dir) / _MANIFEST
    if path.is_file():
        try:
            old = json.loads(path.read_text())
            if not isinstance(old, dict) or not isinstance(old.get("points"), list):
                raise ValueError("no list of points")
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise SweepError(
                f"sweep manifest {path} is damaged or truncated ({type(err).__name__}: {err}); "
                "delete it and rerun: finished points whose parameters match are kept, the rest "
                "recomputed") from None
        if old["points"] != points:
            raise SweepError(
                f"{out_dir} holds a different sweep ({len(old['points'])} points, "
                f"name {old.get('name')!r}); use another directory or delete it to start over")
    else:
        text = json.dumps({"name": name, "points": points})
        atomic_write(path, lambda fh: fh.write(text), mode="w")


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
    distributed = _dask_distributed()
    cluster = None
    if scheduler is None:
        n = max(1, n_workers or os.cpu_count() or 1)
        cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=threads_per_worker,
                                           processes=True, dashboard_address=None)
        client = distributed.Client(cluster)
    else:
        client = distributed.Client(scheduler)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _finished(out_dir, index, point):
    """The stored result of point ``index`` if it is finished and intact, else None (warned)."""
    path = point_path(out_dir, index)
    if not path.is_file():
        return None
    try:
        stored_point, result = _read_point(out_dir, index)
    except SweepError as err:
        warnings.warn(f"{err}; recomputing it", SweepWarning, stacklevel=3)
        return None
    return result if stored_point == point else None


def _point_failed(index, point, err):
    return SweepError(f"sweep point {index} {point} failed: {type(err).__name__}: {err} "
                      "(the points finished so far are saved; fix the cause and rerun to resume)")


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
    Returns a list of result dicts (arrays restored from ``.npz``).  A point
    whose ``fn`` raises stops the sweep with a :class:`SweepError` naming its
    index and parameters (the cause chained); finished points stay saved.
    """
    points = [_jsonable(dict(p)) for p in points]
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_manifest(out_dir, points, name)
    results = [_finished(out_dir, i, p) for i, p in enumerate(points)]
    todo = [i for i, r in enumerate(results) if r is None]
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(points), initial=len(points) - len(todo), desc=name, unit="point",
                   leave=False)
    try:
        if not todo:
            pass
        elif client is not None:
            _collect(client, fn, points, todo, out_dir, results, bar, retries)
        elif scheduler == "serial":
            for i in todo:
                try:
                    res = fn(points[i])
                except Exception as err:
                    raise _point_failed(i, points[i], err) from err
                _store(out_dir, i, points, res, results, bar)
        else:
            _run_distributed(fn, points, todo, out_dir, results, scheduler,
                             n_workers, threads_per_worker, bar, retries)
    finally:
        if bar is not None:
            bar.close()
    return results


def _store(out_dir, i, points, res, results, bar):
    _write_point(out_dir, i, points[i], res)
    results[i] = _read_point(out_dir, i)[1]
    if bar is not None:
        bar.update(1)


def _run_distributed(fn, points, todo, out_dir, results, scheduler, n_workers,
                     threads_per_worker, bar, retries):
    if scheduler is None and n_workers is None:
        n_workers = max(1, min(os.cpu_count() or 1, len(todo)))
    with open_client(scheduler, n_workers, threads_per_worker) as client:
        _collect(client, fn, points, todo, out_dir, results, bar, retries)


def _collect(client, fn, points, todo, out_dir, results, bar, retries):
    as_completed = _dask_distributed().as_completed
    futures = {}
    for i in todo:
        fut = client.submit(fn, points[i], pure=False, retries=retries)
        futures[fut] = i
    try:
        for fut in as_completed(list(futures)):
            i = futures[fut]
            try:
                res = fut.result()      # re-raises the worker's exception with its traceback
            except Exception as err:
                raise _point_failed(i, points[i], err) from err
            _store(out_dir, i, points, res, results, bar)
    finally:
        client.cancel(list(futures))
