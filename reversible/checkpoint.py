"""Save the state after an exact forward pass and load it later to run the reverse pass.

A checkpoint is one ``.npz`` file written with :func:`numpy.savez` (never
pickle) holding everything :func:`reversible.trajectory.reverse` needs: the
fixed-point ``W``, ``V``, ``W0``, ``V0``, ``frac_bits``, the information buffer
(heads, tail pointers and tail words), the schedule (``alphas``, quantised
momenta ``n``, ``group_index``), the forward statistics (as JSON) and a format
tag and version.

Integrity: a SHA-256 digest over every stored array's name, dtype, shape and
bytes is stored in the file and recomputed on load.  A truncated, altered or
foreign file, or one written by a newer format, raises
:class:`~reversible.errors.CheckpointError`; a loaded state is never silently
different from the saved one.
"""

import hashlib
import json
import os

import numpy as np

from .buffer import BETA_ONE, InfoBuffer
from .errors import CheckpointError
from .fixedpoint import check_frac_bits
from .trajectory import Schedule, TrainState

FORMAT = "reversible-trainstate"
VERSION = 1

# arrays covered by the digest, with the dtype each must have
_ARRAYS = {
    "W": np.int64, "V": np.int64, "W0": np.int64, "V0": np.int64,
    "frac_bits": np.int64,
    "head": np.uint64, "ptr": np.int64, "tail": np.uint32,
    "alphas": np.float64, "n": np.int64, "group_index": np.int64,
    "stats_json": np.str_,
    "format": np.str_, "version": np.int64,
}
_DIGEST_KEY = "sha256"


def _digest(arrays):
    """SHA-256 over the arrays in name order: name, dtype, shape and raw C-order bytes."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        meta = json.dumps([name, a.dtype.str, list(a.shape)]).encode()
        h.update(len(meta).to_bytes(8, "little"))
        h.update(meta)
        data = a.tobytes()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def _jsonable(value):
    """Stats values as JSON (numpy scalars to Python numbers; others dropped)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return None


def _arrays_of(state):
    if not isinstance(state, TrainState):
        raise TypeError(f"save() expects a trajectory.TrainState; got {type(state).__name__}")
    sched, buf = state.schedule, state.buffer
    stats = {k: _jsonable(v) for k, v in state.stats.items()}
    return {
        "W": np.asarray(state.W, dtype=np.int64), "V": np.asarray(state.V, dtype=np.int64),
        "W0": np.asarray(state.W0, dtype=np.int64), "V0": np.asarray(state.V0, dtype=np.int64),
        "frac_bits": np.array(state.frac_bits, dtype=np.int64),
        "head": np.asarray(buf.head, dtype=np.uint64), "ptr": np.asarray(buf.ptr, dtype=np.int64),
        "tail": buf.tail_matrix(),
        "alphas": np.asarray(sched.alphas, dtype=np.float64),
        "n": np.asarray(sched.n, dtype=np.int64),
        "group_index": np.asarray(sched.group_index, dtype=np.int64),
        "stats_json": np.array(json.dumps(stats, allow_nan=True)),
        "format": np.array(FORMAT), "version": np.array(VERSION, dtype=np.int64),
    }


def save(state, path):
    """Write ``state`` (a :class:`TrainState` after :func:`trajectory.forward`) to ``path``.

    The file is written to a temporary name and renamed, so an interrupted
    save never leaves a half-written checkpoint under ``path``.  ``path`` is
    used as given (NumPy's automatic ``.npz`` suffix is avoided).
    """
    arrays = _arrays_of(state)
    arrays[_DIGEST_KEY] = np.array(_digest(arrays))
    path = os.fspath(path)
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, path)
    return path


def _read(path):
    try:
        npz = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except Exception as err:      # any failure to parse a foreign or damaged file
        raise CheckpointError(f"cannot read checkpoint {path}: not a .npz file or truncated "
                              f"({type(err).__name__}: {err})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise CheckpointError(f"{path} holds a single array, not a reversible .npz checkpoint")
    try:
        with npz:
            names = set(npz.files)
            if _DIGEST_KEY not in names or "format" not in names:
                raise CheckpointError(
                    f"{path} is not a reversible checkpoint (no format tag or digest); "
                    "write checkpoints with reversible.checkpoint.save")
            return {name: npz[name] for name in names}
    except CheckpointError:
        raise
    except Exception as err:      # zipfile, zlib, npy-header and EOF errors alike
        raise CheckpointError(
            f"cannot read checkpoint {path}: the file is truncated, corrupt or not a "
            f"reversible .npz checkpoint ({type(err).__name__}: {err})") from None


def load(path):
    """Read a checkpoint written by :func:`save`; returns a :class:`TrainState`.

    Raises :class:`CheckpointError` if the file is missing, truncated, altered,
    of another kind or of a newer format version.
    """
    path = os.fspath(path)
    arrays = _read(path)
    fmt = arrays["format"]
    if fmt.dtype.kind != "U" or fmt.shape != () or str(fmt) != FORMAT:
        raise CheckpointError(f"{path} is not a reversible TrainState checkpoint "
                              f"(format tag {fmt!r}, expected {FORMAT!r})")
    missing = sorted(set(_ARRAYS) - set(arrays))
    extra = sorted(set(arrays) - set(_ARRAYS) - {_DIGEST_KEY})
    if missing or extra:
        raise CheckpointError(f"{path}: checkpoint arrays do not match format {FORMAT} "
                              f"(missing {missing}, unexpected {extra})")
    stored = arrays.pop(_DIGEST_KEY)
    if stored.dtype.kind != "U" or stored.shape != () or str(stored) != _digest(arrays):
        raise CheckpointError(f"{path}: integrity check failed (SHA-256 of the stored arrays "
                              "does not match the digest in the file): the file was altered")
    version = int(arrays["version"])
    if version != VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {version}; this version of "
                              f"reversible reads version {VERSION}")
    for name, dtype in _ARRAYS.items():
        if arrays[name].dtype.type is not np.dtype(dtype).type:
            raise CheckpointError(f"{path}: array {name!r} has dtype {arrays[name].dtype}, "
                                  f"expected {np.dtype(dtype)}")
    try:
        return _build(arrays)
    except ValueError as err:
        raise CheckpointError(f"{path}: inconsistent checkpoint: {err}") from None


def _build(a):
    """A TrainState from validated arrays (ValueError on any inconsistency)."""
    W, V, W0, V0 = a["W"], a["V"], a["W0"], a["V0"]
    N = W.shape[0] if W.ndim == 1 else -1
    for name in ("W", "V", "W0", "V0", "head", "ptr", "group_index"):
        if a[name].shape != (N,):
            raise ValueError(f"{name} has shape {a[name].shape}, expected ({N},)")
    alphas, n = a["alphas"], a["n"]
    if alphas.ndim != 2 or alphas.shape[0] < 1 or n.shape != alphas.shape:
        raise ValueError(f"schedule shapes alphas {alphas.shape} and n {n.shape} must be equal (T, G)")
    G = alphas.shape[1]
    if N and (a["group_index"].min() < 0 or a["group_index"].max() >= G):
        raise ValueError(f"group_index must lie in [0, {G})")
    if n.min() < 1 or n.max() > BETA_ONE:
        raise ValueError(f"quantised momenta n must lie in [1, {BETA_ONE}]")
    if not np.all(np.isfinite(alphas)):
        raise ValueError("alphas contain NaN or Inf")
    frac_bits = check_frac_bits(int(a["frac_bits"]))
    buffer = InfoBuffer.from_arrays(a["head"], a["ptr"], a["tail"])
    schedule = Schedule(alphas.copy(), n.copy(), a["group_index"].copy())
    try:
        stats = json.loads(str(a["stats_json"]))
    except json.JSONDecodeError as err:
        raise ValueError(f"stats are not valid JSON ({err})") from None
    return TrainState(W.copy(), V.copy(), buffer, schedule, frac_bits, W0.copy(), V0.copy(),
                      stats if isinstance(stats, dict) else {})
