"""Save the state after an exact forward pass and load it later to run the reverse pass.

A checkpoint is one ``.npz`` file written with :func:`numpy.savez` (never
pickle) holding everything :func:`reversible.trajectory.reverse` needs: the
fixed-point ``W``, ``V``, ``W0``, ``V0``, ``frac_bits``, the information buffer
(heads, tail pointers and tail words), the schedule (``alphas``, quantised
momenta ``n``, ``group_index``), the forward statistics (as JSON) and a format
tag and format version (files of another version are refused, naming both
versions).  :func:`train` and :func:`hypergradient` also record the
layout of ``w0`` and ``meta`` and the value of ``meta``, so that the reverse pass
of a :func:`reversible.sgd` run can be resumed from the file with nothing but
the training loss.

Integrity: a SHA-256 digest over every stored array's name, dtype, shape and
bytes is stored in the file and recomputed on load.  A truncated, altered or
foreign file, or one of another format version, raises
:class:`~reversible.errors.CheckpointError`; a loaded state is never silently
different from the saved one.

Writing: atomic (unique temporary file, fsync, rename) and exclusive (a lock
file per path; a concurrent second writer gets an error); see :func:`save`.
"""

import contextlib
import hashlib
import json
import os
import socket
import tempfile
import warnings

import numpy as np

from .atomic import atomic_write, remove_temporaries, temporary_prefix
from .buffer import BETA_ONE, WORD_DTYPE, InfoBuffer
from .errors import CheckpointError
from .fixedpoint import check_frac_bits
from .trajectory import Schedule, TrainState

FORMAT = "reversible-trainstate"
#: Format version written and the only one read.  1: reversible 0.1 (momenta
#: quantised to 2**-16).  2: reversible 0.2 (engine v2; the file also records
#: the momentum quantum ``beta_bits``, checked against this engine's).
VERSION = 2
#: log2 of the momentum quantum's denominator of this engine (beta = n / 2**beta_bits)
BETA_QUANTUM_BITS = BETA_ONE.bit_length() - 1


class CheckpointWarning(UserWarning):
    """Something about an earlier save needed cleaning up (it is reported, then fixed)."""


# arrays covered by the digest, with the dtype each must have
_ARRAYS = {
    "W": np.int64, "V": np.int64, "W0": np.int64, "V0": np.int64,
    "frac_bits": np.int64,
    "head": np.uint64, "ptr": np.int64, "tail": WORD_DTYPE,
    "alphas": np.float64, "n": np.int64, "group_index": np.int64,
    "stats_json": np.str_, "layout_json": np.str_, "meta": np.float64,
    "format": np.str_, "version": np.int64, "beta_bits": np.int64,
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


def _arrays_of(state, layout=None, meta=None):
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
        "layout_json": np.array(json.dumps(layout)),
        "meta": np.zeros(0) if meta is None else np.asarray(meta, dtype=np.float64).ravel(),
        "format": np.array(FORMAT), "version": np.array(VERSION, dtype=np.int64),
        "beta_bits": np.array(BETA_QUANTUM_BITS, dtype=np.int64),
    }


def save(state, path, layout=None, meta=None):
    """Write ``state`` (a :class:`TrainState` after :func:`trajectory.forward`) to ``path``.

    ``layout`` (JSON-serialisable) and ``meta`` (a flat float vector) are
    optional extras that :func:`train` stores so that :func:`hypergradient`
    needs nothing but the training loss.  ``path`` is used as given (NumPy's
    automatic ``.npz`` suffix is avoided).

    The save is atomic and exclusive: the arrays go to a uniquely named
    temporary file in the target directory, are flushed to disk and renamed
    over ``path``, so readers see the old file or the new one, never a mix.
    While saving, the process holds a lock on ``path + ".lock"``; a second
    process saving to the same path at the same time gets a
    :class:`CheckpointError` naming the holder's pid instead of silently losing
    its state.  Temporary files left by a writer that was killed mid-save are
    removed by the next save to the same path (with a warning).
    """
    arrays = _arrays_of(state, layout, meta)
    path = os.fspath(path)
    check_writable(path)
    with _WriterLock(path):
        _write_locked(path, arrays)
    return path


def _write_locked(path, arrays):
    """Add the digest and write atomically; the caller holds the path's writer lock."""
    arrays[_DIGEST_KEY] = np.array(_digest(arrays))
    _remove_orphans(path)
    atomic_write(path, lambda fh: np.savez(fh, **arrays))


def check_writable(path):
    """Raise :class:`CheckpointError` unless a checkpoint can be written at ``path``.

    Checks that the directory exists and accepts a new file (by creating and
    removing a probe file there), and that ``path`` is not a directory.
    :func:`train` calls it before the forward pass, so a bad path costs nothing.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        what = "is not a directory" if os.path.exists(directory) else "does not exist"
        raise CheckpointError(f"cannot save checkpoint {path}: directory {directory} {what}; "
                              "create it first or choose another path")
    if os.path.isdir(path):
        raise CheckpointError(f"cannot save checkpoint {path}: it is a directory; give a file name")
    try:        # a probe suffix of its own: a writer cleaning up its temporaries leaves it alone
        fd, probe = tempfile.mkstemp(prefix=temporary_prefix(path), suffix=".reversible-probe",
                                     dir=directory)
    except OSError as err:
        raise CheckpointError(f"cannot save checkpoint {path}: directory {directory} is not "
                              f"writable ({err.strerror}); choose a writable directory") from None
    os.close(fd)
    os.remove(probe)


def _remove_orphans(path):
    """Delete temporary files of earlier saves to ``path`` that never finished (writer killed).

    Called while holding the writer lock, so no live writer owns them.
    """
    orphans = remove_temporaries(path)
    if orphans:
        warnings.warn(f"removed {len(orphans)} unfinished temporary file(s) of an interrupted "
                      f"save to {path} ({', '.join(orphans)})", CheckpointWarning, stacklevel=4)


class _WriterLock:
    """An exclusive, non-blocking lock on ``path + ".lock"`` holding the writer's pid.

    POSIX: ``flock`` on the lock file, released by the kernel if the writer
    dies, so a dead writer never blocks the next save; the file left behind is
    reported (its pid) and reused.  Elsewhere: the file is created with
    ``O_EXCL`` and a leftover one must be removed by hand (the error says so).
    """

    def __init__(self, path):
        self.path = path
        self.lock_path = path + ".lock"
        self.fd = None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:            # Windows
            fcntl = None
        self.flock = fcntl is not None
        for _ in range(100):           # retry only if the lock file was replaced under us
            if fcntl is None:
                self._acquire_exclusive_create()
                break
            if self._acquire_flock(fcntl):
                break
        else:
            raise CheckpointError(f"could not lock {self.lock_path}: it keeps changing")
        os.write(self.fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        os.fsync(self.fd)
        return self

    def _holder(self):
        try:
            with open(self.lock_path, encoding="utf-8", errors="replace") as fh:
                return fh.read().strip() or "unknown"
        except OSError:
            return "unknown"

    def _busy(self):
        holder = self._holder().split()
        who = f"pid {holder[0]}" + (f" on {holder[1]}" if len(holder) > 1 else "")
        return CheckpointError(
            f"another process ({who}) is saving a checkpoint to {self.path} right now; "
            "concurrent saves to one path would lose one of the states: give each run its own "
            "path, or save again after it has finished")

    def _acquire_flock(self, fcntl):
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self._busy() from None
        try:
            same = os.fstat(fd).st_ino == os.stat(self.lock_path).st_ino
        except FileNotFoundError:
            same = False
        if not same:                   # the previous holder removed it after we opened it
            os.close(fd)
            return False
        previous = os.read(fd, 200).decode("utf-8", "replace").split()
        if previous:
            warnings.warn(f"a previous save to {self.path} by pid {previous[0]} did not finish "
                          "(the process died); its lock was released and is reused",
                          CheckpointWarning, stacklevel=4)
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        self.fd = fd
        return True

    def _acquire_exclusive_create(self):
        try:
            self.fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            err = self._busy()
            raise CheckpointError(f"{err} (if no such process is running, delete "
                                  f"{self.lock_path})") from None

    def __exit__(self, *exc):
        if self.flock:
            with contextlib.suppress(OSError):
                os.remove(self.lock_path)   # before unlocking: a waiter then sees a changed file
            os.close(self.fd)               # closing releases the flock
        else:
            os.close(self.fd)               # Windows cannot remove an open file
            with contextlib.suppress(OSError):
                os.remove(self.lock_path)
        self.fd = None
        return False


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
    return _load_all(path)[0]


def _load_all(path):
    """``(state, layout, meta)`` from a verified checkpoint."""
    path = os.fspath(path)
    arrays = _read(path)
    fmt = arrays["format"]
    if fmt.dtype.kind != "U" or fmt.shape != () or str(fmt) != FORMAT:
        raise CheckpointError(f"{path} is not a reversible TrainState checkpoint "
                              f"(format tag {fmt!r}, expected {FORMAT!r})")
    _check_version(path, arrays.get("version"), arrays.get("beta_bits"))
    missing = sorted(set(_ARRAYS) - set(arrays))
    extra = sorted(set(arrays) - set(_ARRAYS) - {_DIGEST_KEY})
    if missing or extra:
        raise CheckpointError(f"{path}: checkpoint arrays do not match format {FORMAT} "
                              f"(missing {missing}, unexpected {extra})")
    stored = arrays.pop(_DIGEST_KEY)
    if stored.dtype.kind != "U" or stored.shape != () or str(stored) != _digest(arrays):
        raise CheckpointError(f"{path}: integrity check failed (SHA-256 of the stored arrays "
                              "does not match the digest in the file): the file was altered")
    for name, dtype in _ARRAYS.items():
        if arrays[name].dtype.type is not np.dtype(dtype).type:
            raise CheckpointError(f"{path}: array {name!r} has dtype {arrays[name].dtype}, "
                                  f"expected {np.dtype(dtype)}")
    try:
        state = _build(arrays)
        layout = json.loads(str(arrays["layout_json"]))
    except (ValueError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: inconsistent checkpoint: {err}") from None
    return state, layout, arrays["meta"].copy()


def _check_version(path, version, beta_bits):
    """Refuse a file of another format version, or of this version from another momentum quantum."""
    if version is None:
        raise CheckpointError(f"{path} records no checkpoint format version (an early reversible "
                              f"file); this version of reversible reads format version {VERSION} "
                              "only: rerun the forward pass to write a new checkpoint")
    if version.shape != () or version.dtype.kind not in "iu":
        raise CheckpointError(f"{path}: the format version is not an integer ({version!r}); "
                              f"this version of reversible reads format version {VERSION}")
    if int(version) != VERSION:
        written_by = {1: " (written by reversible 0.1, whose engine quantised momenta to 2**-16)"}
        raise CheckpointError(
            f"{path} is checkpoint format version {int(version)}"
            f"{written_by.get(int(version), '')}; this version of reversible reads format version "
            f"{VERSION} only: rerun the forward pass with this version to write a new checkpoint "
            "(or reverse it with the version that wrote it)")
    if beta_bits is None or beta_bits.shape != () or beta_bits.dtype.kind not in "iu" \
            or int(beta_bits) != BETA_QUANTUM_BITS:
        raise CheckpointError(
            f"{path} was written by an engine that quantises momenta to 2**-{beta_bits} but this "
            f"engine uses 2**-{BETA_QUANTUM_BITS}: its buffer cannot be reversed here; rerun the "
            "forward pass")


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


# ------------------------------------------------------------------------------------------
# High level: the exact forward pass of ``reversible.sgd`` to a file, the reverse pass later.

def _tree_to_json(tree):
    if tree[0] == "array":
        return {"array": list(tree[1])}
    kind, keys, subtrees = tree
    if keys is not None and not all(isinstance(k, str) for k in keys):
        raise ValueError("checkpoints need string dict keys in w0 and meta; got "
                         f"{[k for k in keys if not isinstance(k, str)][:3]}")
    return {"kind": kind, "keys": keys, "items": [_tree_to_json(t) for t in subtrees]}


def _example_from_json(node):
    """A container of zero arrays with the recorded layout (to rebuild a Structure)."""
    if "array" in node:
        return np.zeros(tuple(node["array"]))
    items = [_example_from_json(c) for c in node["items"]]
    if node["kind"] == "dict":
        return dict(zip(node["keys"], items))
    return tuple(items) if node["kind"] == "tuple" else items


def train(train_loss, w0, alphas, betas, meta=None, *, path, v0=None, frac_bits=None,
          kernel="auto", progress=False, stats=None):
    """Run the exact forward pass of :func:`reversible.sgd` and save it to ``path``.

    Same arguments and validation as ``sgd``; returns ``w_T`` in the structure
    of ``w0``.  A ``path`` that cannot be written (missing or read-only
    directory) raises :class:`CheckpointError` before any training, and so
    does a ``path`` another process is writing: the writer lock (see
    :func:`save`) is taken before the forward pass and held until the file is
    written.  The checkpoint also records the layout of ``w0`` and ``meta``
    and the value of ``meta``, so :func:`hypergradient` needs only the loss.
    """
    from .inputs import sgd_inputs           # late: inputs imports the problem and engine
    from .trajectory import forward

    path = os.fspath(path)
    check_writable(path)                    # before the forward pass, which may take hours
    inp = sgd_inputs(train_loss, w0, alphas, betas, meta, v0=v0, frac_bits=frac_bits,
                     kernel=kernel, progress=progress, stats=stats)
    problem, params = inp.problem, inp.params
    layout = {"w0": _tree_to_json(params.structure.tree),
              "meta": None if meta is None else _tree_to_json(params.meta_structure.tree),
              "alphas_ndim": int(np.ndim(alphas)), "betas_ndim": int(np.ndim(betas))}
    with _WriterLock(path):                 # held from before training: a clash costs nothing
        state = forward(problem.grad, problem.w0, problem.schedule(), problem.meta, problem.v0,
                        problem.frac_bits, problem.kernel, problem.progress)
        state.stats["first_step_rounding"] = problem.first_step_rounding
        _write_locked(path, _arrays_of(state, layout, problem.meta))
    inp.stats.update(state.stats)
    return params.unflatten(state.w)


def hypergradient(path, train_loss, dw_T, *, dv_T=None, kernel="auto", progress=False,
                  hvp="auto", stats=None):
    """Reverse pass from a checkpoint written by :func:`train`.

    ``dw_T`` (and optionally ``dv_T``) is the gradient of the meta-objective
    with respect to ``w_T`` (``v_T``), in the structure of ``w0``.  Returns a
    dict of hypergradients: ``w0`` and ``v0`` in the structure of ``w0``,
    ``alphas`` and ``betas`` in the shape they were given (``(T,)`` or
    ``(T, G)``), and ``meta`` in its structure (or None).  Raises
    :class:`~reversible.errors.ReversibilityError` if ``train_loss`` does not
    reproduce the saved trajectory bit for bit.
    """
    from . import validate
    from .inputs import HVP_MODES
    from .problem import Problem
    from .structure import Structure
    from .trajectory import reverse

    validate.function(train_loss, "train_loss", " train_loss(w, meta, t) -> scalar")
    stats = validate.stats_dict(stats)
    progress = validate.flag(progress, "progress")
    validate.choice(hvp, "hvp", HVP_MODES)
    state, layout, meta_flat = _load_all(path)
    if not isinstance(layout, dict) or "w0" not in layout:
        raise CheckpointError(f"{path} holds no layout of w0: write it with "
                              "reversible.checkpoint.train to resume with hypergradient()")
    structure = Structure(_example_from_json(layout["w0"]), "w0")
    meta_structure = None if layout["meta"] is None else \
        Structure(_example_from_json(layout["meta"]), "meta")
    meta = None if meta_structure is None else meta_flat
    if structure.size != state.W.size or (meta is not None and meta.size != meta_structure.size):
        raise CheckpointError(f"{path}: recorded layout does not match the stored arrays")
    dw = validate.real_array(structure.flatten(dw_T), "dw_T").astype(np.float64)
    dv = None if dv_T is None else validate.real_array(structure.flatten(dv_T),
                                                       "dv_T").astype(np.float64)
    problem = Problem.from_containers(
        train_loss, structure, meta_structure, w0=state.w.copy(), v0=state.v.copy(),
        alphas=state.schedule.alphas, betas=state.schedule.betas, meta=meta,
        frac_bits=state.frac_bits, kernel=kernel, progress=progress, hvp=hvp)
    out = reverse(state, problem.vjp, dw, dv, meta, problem.meta_size, kernel, progress)
    stats.update(state.stats)
    result = {"w0": structure.unflatten(out["w0"]), "v0": structure.unflatten(out["v0"]),
              "meta": None if meta is None else meta_structure.unflatten(out["meta"])}
    for name in ("alphas", "betas"):
        result[name] = out[name].sum(axis=1) if layout[f"{name}_ndim"] == 1 else out[name]
    return result
