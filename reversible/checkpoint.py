"""Save the state after an exact forward pass and load it later to run the reverse pass.

A checkpoint is one ``.npz`` file written with :func:`numpy.savez` (never
pickle) holding everything :func:`reversible.trajectory.reverse` needs, for
either update rule of the engine: SGD with momentum (:func:`reversible.sgd`)
or Adam / AdamW (:func:`reversible.adam`).  Every file holds the fixed-point
weights ``W`` and ``W0``, ``frac_bits``, the information buffer (heads, tail
pointers and tail words), the schedule every rule has (``alphas``, quantised
momenta ``n``, ``group_index``), the forward statistics (as JSON), the update
rule's name (``rule``) and a format tag and format version (files of a version
this module does not read are refused, naming both versions).  Each rule adds
its own arrays (:class:`MomentumArrays`, :class:`AdamArrays`): momentum the
velocities ``V``, ``V0``; Adam the moments ``M``, ``S``, their fixed-point
formats and the rest of its schedule.  :func:`train`, :func:`train_adam` and
:func:`hypergradient` also record the layout of ``w0`` and ``meta``, the value
of ``meta`` and the shapes the hyperparameters were given in, so that the
reverse pass of a :func:`reversible.sgd` or :func:`reversible.adam` run can be
resumed from the file with nothing but the training loss.

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
from autograd import make_vjp

from .adam_rule import AdamFormat, AdamSchedule, AdamState
from .atomic import atomic_write, remove_temporaries, temporary_prefix
from .buffer import BETA_ONE, WORD_DTYPE, InfoBuffer, quantize_beta
from .errors import CheckpointError
from .fixedpoint import check_frac_bits
from .trajectory import Schedule, TrainState

FORMAT = "reversible-trainstate"
#: Format version written.  1: reversible 0.1 (momenta quantised to 2**-16).
#: 2: reversible 0.2 (engine v2; the file also records the momentum quantum
#: ``beta_bits``, checked against this engine's; SGD with momentum only).
#: 3: the file names its update rule (``rule``: ``"momentum"`` or ``"adam"``).
VERSION = 3
#: Format versions read: 3, and 2 (an SGD-with-momentum file without a rule name).
READ_VERSIONS = (2, 3)
#: log2 of the momentum quantum's denominator of this engine (beta = n / 2**beta_bits)
BETA_QUANTUM_BITS = BETA_ONE.bit_length() - 1


class CheckpointWarning(UserWarning):
    """Something about an earlier save needed cleaning up (it is reported, then fixed)."""


# arrays every checkpoint holds (each rule adds its own), with the dtype each must have
_COMMON_ARRAYS = {
    "W": np.int64, "W0": np.int64, "frac_bits": np.int64,
    "head": np.uint64, "ptr": np.int64, "tail": WORD_DTYPE,
    "alphas": np.float64, "n": np.int64, "group_index": np.int64,
    "stats_json": np.str_, "layout_json": np.str_, "meta": np.float64,
    "format": np.str_, "version": np.int64, "beta_bits": np.int64, "rule": np.str_,
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
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return None


# ------------------------------------------------------------------------------------------
# Each update rule's own arrays.  An entry of RULES has: ``name`` (stored as ``rule``),
# ``state_type``, ``arrays`` (its names -> dtypes), ``encode(state)`` -> those arrays,
# ``decode(arrays, common)`` -> the state, ``problem_class()`` (whose derivatives its reverse
# pass uses) and ``expand(given, G)`` (its front end's map from the hyperparameters as given to
# the arrays the engine holds, used to return hypergradients in the shapes given).

def _shape_check(a, names, shape):
    for name in names:
        if a[name].shape != shape:
            raise ValueError(f"{name} has shape {a[name].shape}, expected {shape}")


def _quanta_check(n, name):
    if n.min() < 1 or n.max() > BETA_ONE:
        raise ValueError(f"quantised {name} must lie in [1, {BETA_ONE}]")


class MomentumArrays:
    """SGD with momentum (:class:`~reversible.trajectory.TrainState`): the velocities."""

    name = "momentum"
    state_type = TrainState
    arrays = {"V": np.int64, "V0": np.int64}

    @staticmethod
    def encode(state):
        return {"V": np.asarray(state.V, dtype=np.int64),
                "V0": np.asarray(state.V0, dtype=np.int64)}

    @staticmethod
    def decode(a, common):
        """The state from validated arrays and the rule-independent parts (``common``)."""
        _shape_check(a, ("V", "V0"), common["W"].shape)
        schedule = Schedule(common["alphas"], common["n"], common["group_index"])
        return TrainState(common["W"], a["V"].copy(), common["buffer"], schedule,
                          common["frac_bits"], common["W0"], a["V0"].copy(), common["stats"])

    @staticmethod
    def problem_class():
        from .problem import Problem
        return Problem

    @staticmethod
    def expand(given, G):
        """The hyperparameters as given to ``sgd`` -> as the engine holds them (differentiable)."""
        from .inputs import sgd_hyperparameters
        return sgd_hyperparameters(given["alphas"], given["betas"], G)


class AdamArrays:
    """Adam / AdamW (:class:`~reversible.adam_rule.AdamState`): the moments, their formats and
    the rest of Adam's schedule (``n`` holds the quantised ``beta1``)."""

    name = "adam"
    state_type = AdamState
    arrays = {"M": np.int64, "S": np.int64, "frac_bits_m": np.int64, "frac_bits_s": np.int64,
              "n2": np.int64, "n_decay": np.int64, "eps": np.float64,
              "weight_decay": np.float64}

    @staticmethod
    def encode(state):
        fmt, sched = state.fmt, state.schedule
        if fmt.m is None or fmt.s is None:
            raise ValueError("this Adam state has not taken a step (its moment formats are "
                             "chosen at the first one): save it after trajectory.run_forward")
        return {"M": np.asarray(state.M, dtype=np.int64), "S": np.asarray(state.S, dtype=np.int64),
                "frac_bits_m": np.asarray(fmt.m, dtype=np.int64),
                "frac_bits_s": np.asarray(fmt.s, dtype=np.int64),
                "n2": np.asarray(sched.n2, dtype=np.int64),
                "n_decay": np.asarray(sched.n_decay, dtype=np.int64),
                "eps": np.asarray(sched.eps, dtype=np.float64),
                "weight_decay": np.asarray(sched.weight_decay, dtype=np.float64)}

    @staticmethod
    def decode(a, common):
        alphas, n = common["alphas"], common["n"]
        T, G = alphas.shape
        _shape_check(a, ("M", "S"), common["W"].shape)
        _shape_check(a, ("n2", "n_decay", "weight_decay"), (T, G))
        _shape_check(a, ("eps", "frac_bits_m", "frac_bits_s"), (G,))
        if np.any(a["S"] < 0):
            raise ValueError("second moments S must be >= 0")
        _quanta_check(a["n2"], "beta2s")
        _quanta_check(a["n_decay"], "decay factors")
        if np.any(n[0] == BETA_ONE) or np.any(a["n2"][0] == BETA_ONE):
            raise ValueError("first-step betas must be below 1 (Adam's bias correction)")
        eps, wd = a["eps"], a["weight_decay"]
        if not np.all(np.isfinite(eps)) or np.any(eps <= 0):
            raise ValueError("eps must be positive and finite")
        if not np.all(np.isfinite(wd)) or np.any(wd < 0):
            raise ValueError("weight_decay must be finite and >= 0")
        if not np.array_equal(quantize_beta(1.0 - alphas * wd), a["n_decay"]):
            raise ValueError("decay factors n_decay do not match 1 - alphas * weight_decay")
        for key in ("frac_bits_m", "frac_bits_s"):
            if np.any(a[key] < -60) or np.any(a[key] > 400):
                raise ValueError(f"{key} must lie in [-60, 400]")
        schedule = AdamSchedule(alphas, n, common["group_index"], n2=a["n2"].copy(),
                                eps=eps.copy(), weight_decay=wd.copy(),
                                n_decay=a["n_decay"].copy())
        fmt = AdamFormat(common["frac_bits"], a["frac_bits_m"].copy(), a["frac_bits_s"].copy())
        return AdamState(common["W"], a["M"].copy(), a["S"].copy(), common["buffer"], schedule,
                         fmt, common["W0"], common["stats"])

    @staticmethod
    def problem_class():
        from .adam_api import AdamProblem
        return AdamProblem

    @staticmethod
    def expand(given, G):
        """The hyperparameters as given to ``adam`` -> as the engine holds them (differentiable)."""
        from .adam_api import hyperparameters
        return hyperparameters(given["alphas"], given["beta1s"], given["beta2s"], given["eps"],
                               given["weight_decay"], G)


#: the update rules a checkpoint can hold, by the name stored in its ``rule`` array
RULES = {c.name: c for c in (MomentumArrays, AdamArrays)}


def _rule_of(state):
    for rule in RULES.values():
        if isinstance(state, rule.state_type):
            return rule
    raise TypeError("save() expects the state of an exact forward pass (a trajectory.TrainState "
                    f"or an adam_rule.AdamState); got {type(state).__name__}")


def _arrays_of(state, layout=None, meta=None):
    rule = _rule_of(state)
    sched, buf = state.schedule, state.buffer
    stats = {k: _jsonable(v) for k, v in state.stats.items()}
    return {
        "W": np.asarray(state.W, dtype=np.int64), "W0": np.asarray(state.W0, dtype=np.int64),
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
        "rule": np.array(rule.name),
        **rule.encode(state),
    }

def save(state, path, layout=None, meta=None):
    """Write ``state`` (a :class:`TrainState` or :class:`AdamState` after an exact forward pass)
    to ``path``.

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
    """Read a checkpoint written by :func:`save`; returns the state it holds: a
    :class:`~reversible.trajectory.TrainState` (SGD with momentum) or an
    :class:`~reversible.adam_rule.AdamState` (Adam), ready for :func:`trajectory.reverse`.

    Raises :class:`CheckpointError` if the file is missing, truncated, altered,
    of another kind or of a format version this module does not read.
    """
    return _load_all(path)[0]


def _load_all(path):
    """``(state, layout, meta, rule)`` from a verified checkpoint (``rule``: its entry of
    :data:`RULES`)."""
    path = os.fspath(path)
    arrays = _read(path)
    fmt = arrays["format"]
    if fmt.dtype.kind != "U" or fmt.shape != () or str(fmt) != FORMAT:
        raise CheckpointError(f"{path} is not a reversible TrainState checkpoint "
                              f"(format tag {fmt!r}, expected {FORMAT!r})")
    version = _check_version(path, arrays.get("version"), arrays.get("beta_bits"))
    stored = arrays.pop(_DIGEST_KEY)
    if stored.dtype.kind != "U" or stored.shape != () or str(stored) != _digest(arrays):
        raise CheckpointError(f"{path}: integrity check failed (SHA-256 of the stored arrays "
                              "does not match the digest in the file): the file was altered")
    rule = _check_rule(path, version, arrays.get("rule"))
    expected = {**_COMMON_ARRAYS, **rule.arrays}
    if version == 2:                        # written before files named their rule
        del expected["rule"]
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    if missing or extra:
        raise CheckpointError(f"{path}: checkpoint arrays do not match format {FORMAT} version "
                              f"{version} for rule {rule.name!r} (missing {missing}, "
                              f"unexpected {extra})")
    for name, dtype in expected.items():
        if arrays[name].dtype.type is not np.dtype(dtype).type:
            raise CheckpointError(f"{path}: array {name!r} has dtype {arrays[name].dtype}, "
                                  f"expected {np.dtype(dtype)}")
    try:
        state = rule.decode(arrays, _common_parts(arrays))
        layout = json.loads(str(arrays["layout_json"]))
    except (ValueError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: inconsistent checkpoint: {err}") from None
    return state, layout, arrays["meta"].copy(), rule


def _check_version(path, version, beta_bits):
    """The file's format version, if read here; else refuse it (or a foreign momentum quantum)."""
    reads = " and ".join(str(v) for v in READ_VERSIONS)
    if version is None:
        raise CheckpointError(f"{path} records no checkpoint format version (an early reversible "
                              f"file); this version of reversible reads format versions {reads} "
                              "only: rerun the forward pass to write a new checkpoint")
    if version.shape != () or version.dtype.kind not in "iu":
        raise CheckpointError(f"{path}: the format version is not an integer ({version!r}); "
                              f"this version of reversible reads format versions {reads}")
    if int(version) not in READ_VERSIONS:
        written_by = {1: " (written by reversible 0.1, whose engine quantised momenta to 2**-16)"}
        raise CheckpointError(
            f"{path} is checkpoint format version {int(version)}"
            f"{written_by.get(int(version), '')}; this version of reversible reads format versions "
            f"{reads} only: rerun the forward pass with this version to write a new checkpoint "
            "(or reverse it with the version that wrote it)")
    if beta_bits is None or beta_bits.shape != () or beta_bits.dtype.kind not in "iu" \
            or int(beta_bits) != BETA_QUANTUM_BITS:
        raise CheckpointError(
            f"{path} was written by an engine that quantises momenta to 2**-{beta_bits} but this "
            f"engine uses 2**-{BETA_QUANTUM_BITS}: its buffer cannot be reversed here; rerun the "
            "forward pass")
    return int(version)


def _check_rule(path, version, name):
    """The update rule a file holds (version 2 files: SGD with momentum)."""
    if version == 2 and name is None:
        return MomentumArrays
    if name is None or name.dtype.kind != "U" or name.shape != () or str(name) not in RULES:
        raise CheckpointError(f"{path} holds an unknown update rule ({name!r}); this version of "
                              f"reversible reads checkpoints of {sorted(RULES)}")
    return RULES[str(name)]


def _common_parts(a):
    """What every rule's state is made of, from validated arrays (ValueError on any
    inconsistency): ``W``, ``W0``, ``frac_bits``, ``buffer``, ``alphas``, ``n``,
    ``group_index`` and ``stats``."""
    W = a["W"]
    N = W.shape[0] if W.ndim == 1 else -1
    _shape_check(a, ("W", "W0", "head", "ptr", "group_index"), (N,))
    alphas, n = a["alphas"], a["n"]
    if alphas.ndim != 2 or alphas.shape[0] < 1 or n.shape != alphas.shape:
        raise ValueError(f"schedule shapes alphas {alphas.shape} and n {n.shape} must be equal "
                         "(T, G)")
    G = alphas.shape[1]
    if N and (a["group_index"].min() < 0 or a["group_index"].max() >= G):
        raise ValueError(f"group_index must lie in [0, {G})")
    _quanta_check(n, "momenta n")
    if not np.all(np.isfinite(alphas)):
        raise ValueError("alphas contain NaN or Inf")
    try:
        stats = json.loads(str(a["stats_json"]))
    except json.JSONDecodeError as err:
        raise ValueError(f"stats are not valid JSON ({err})") from None
    return {"W": W.copy(), "W0": a["W0"].copy(), "frac_bits": check_frac_bits(int(a["frac_bits"])),
            "buffer": InfoBuffer.from_arrays(a["head"], a["ptr"], a["tail"]),
            "alphas": alphas.copy(), "n": n.copy(), "group_index": a["group_index"].copy(),
            "stats": stats if isinstance(stats, dict) else {}}


# ------------------------------------------------------------------------------------------
# High level: the exact forward pass of ``reversible.sgd`` / ``reversible.adam`` to a file,
# the reverse pass later.

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

    path = os.fspath(path)
    check_writable(path)                    # before the forward pass, which may take hours
    inp = sgd_inputs(train_loss, w0, alphas, betas, meta, v0=v0, frac_bits=frac_bits,
                     kernel=kernel, progress=progress, stats=stats)
    return _train_to(path, inp.problem, inp.params, {"alphas": alphas, "betas": betas},
                     inp.stats)


def train_adam(train_loss, w0, alphas, beta1s, beta2s, meta=None, *, path, eps=1e-8,
               weight_decay=0.0, frac_bits=None, kernel="auto", progress=False, stats=None):
    """Run the exact forward pass of :func:`reversible.adam` (Adam, or AdamW with
    ``weight_decay``) and save it to ``path``.

    Same arguments and validation as ``adam``; otherwise as :func:`train`:
    returns ``w_T`` in the structure of ``w0``, and a bad or busy ``path``
    fails before any training.  :func:`hypergradient` reads the file alike.
    """
    from .adam_api import adam_inputs       # late: adam_api imports the methods

    path = os.fspath(path)
    check_writable(path)
    inp = adam_inputs(train_loss, w0, alphas, beta1s, beta2s, meta, eps=eps,
                      weight_decay=weight_decay, frac_bits=frac_bits, kernel=kernel,
                      progress=progress, stats=stats)
    given = {"alphas": alphas, "beta1s": beta1s, "beta2s": beta2s, "eps": eps,
             "weight_decay": weight_decay}
    return _train_to(path, inp.problem, inp.params, given, inp.stats)


def _train_to(path, problem, params, given, stats):
    """The exact forward pass of ``problem`` to ``path``; ``given``: the hyperparameters as the
    caller gave them (their shapes are recorded for :func:`hypergradient`)."""
    from .trajectory import forward

    layout = {"w0": _tree_to_json(params.structure.tree),
              "meta": None if params.meta_structure is None else
              _tree_to_json(params.meta_structure.tree),
              "shapes": {name: list(np.shape(value)) for name, value in given.items()}}
    with _WriterLock(path):                 # held from before training: a clash costs nothing
        state = forward(problem.grad, problem.w0, problem.schedule(), problem.meta, problem.v0,
                        problem.frac_bits, problem.kernel, problem.progress)
        if problem.first_step_rounding is not None:
            state.stats["first_step_rounding"] = problem.first_step_rounding
        _write_locked(path, _arrays_of(state, layout, problem.meta))
    stats.update(state.stats)
    return params.unflatten(state.w)


def hypergradient(path, train_loss, dw_T, *, dv_T=None, kernel="auto", progress=False,
                  hvp="auto", stats=None):
    """Reverse pass from a checkpoint written by :func:`train` or :func:`train_adam`.

    ``dw_T`` is the gradient of the meta-objective with respect to ``w_T``, in
    the structure of ``w0``; ``dv_T`` (SGD with momentum only) that with
    respect to the final velocity.  Returns a dict of hypergradients, the
    numbers ``autograd.grad`` gives through ``reversible.sgd`` /
    ``reversible.adam`` with ``method="exact"``, bit for bit: ``w0`` in the
    structure of ``w0``, ``meta`` in its structure (or None), and each
    hyperparameter in the shape it was given: ``v0``, ``alphas``, ``betas``
    for SGD; ``alphas``, ``beta1s``, ``beta2s``, ``eps``, ``weight_decay``
    for Adam.  Raises :class:`~reversible.errors.ReversibilityError` if
    ``train_loss`` does not reproduce the saved trajectory bit for bit.
    """
    from . import validate
    from .inputs import HVP_MODES
    from .structure import Structure
    from .trajectory import reverse

    validate.function(train_loss, "train_loss", " train_loss(w, meta, t) -> scalar")
    stats = validate.stats_dict(stats)
    progress = validate.flag(progress, "progress")
    validate.choice(hvp, "hvp", HVP_MODES)
    state, layout, meta_flat, rule = _load_all(path)
    if not isinstance(layout, dict) or "w0" not in layout:
        raise CheckpointError(f"{path} holds no layout of w0: write it with "
                              "reversible.checkpoint.train or train_adam to resume with "
                              "hypergradient()")
    structure = Structure(_example_from_json(layout["w0"]), "w0")
    meta_structure = None if layout["meta"] is None else \
        Structure(_example_from_json(layout["meta"]), "meta")
    meta = None if meta_structure is None else meta_flat
    if structure.size != state.W.size or (meta is not None and meta.size != meta_structure.size):
        raise CheckpointError(f"{path}: recorded layout does not match the stored arrays")
    engine_rule = state.schedule.rule(kernel)
    if dv_T is not None and "v0" not in engine_rule.state_kinds:
        raise ValueError(f"dv_T is the cotangent of the final velocity of SGD with momentum, but "
                         f"{path} holds a reversible.{rule.name} run, whose optimiser state is "
                         "not among its outputs: leave dv_T out")
    shapes = _given_shapes(path, layout, engine_rule.hyper_kinds, state.schedule)
    dw = validate.real_array(structure.flatten(dw_T), "dw_T").astype(np.float64)
    dv = None if dv_T is None else validate.real_array(structure.flatten(dv_T),
                                                       "dv_T").astype(np.float64)
    sched = state.schedule
    problem = rule.problem_class().from_containers(
        train_loss, structure, meta_structure, w0=state.w.copy(), v0=None, alphas=sched.alphas,
        betas=sched.betas, meta=meta, frac_bits=state.frac_bits, kernel=kernel,
        progress=progress, hvp=hvp)
    out = reverse(state, problem.vjp, dw, dv, meta, problem.meta_size, kernel, progress,
                  grad=problem.grad, grad_hvp=getattr(problem, "grad_then_hvp", None))
    stats.update(state.stats)
    result = {kind: structure.unflatten(out[kind]) for kind in engine_rule.state_kinds}
    result["meta"] = None if meta is None else meta_structure.unflatten(out["meta"])
    result.update(_as_given(rule.expand, shapes, sched.G, out))
    return result


def _given_shapes(path, layout, kinds, schedule):
    """The shapes the hyperparameters were given in, as recorded by :func:`train` (version 2
    files record only whether ``alphas`` and ``betas`` were ``(T,)`` or ``(T, G)``)."""
    T, G = schedule.T, schedule.G
    if "shapes" not in layout and {"alphas_ndim", "betas_ndim"} <= set(layout):
        shapes = {k: [T] if layout[f"{k}_ndim"] == 1 else [T, G] for k in ("alphas", "betas")}
    else:
        shapes = layout.get("shapes")
    if not isinstance(shapes, dict) or sorted(shapes) != sorted(kinds) or not all(
            isinstance(s, list) and all(isinstance(d, int) and d >= 0 for d in s)
            for s in shapes.values()):
        raise CheckpointError(f"{path}: the recorded hyperparameter shapes ({shapes!r}) do not "
                              f"name {list(kinds)}; the layout is damaged")
    return {k: tuple(shapes[k]) for k in kinds}


def _as_given(expand, shapes, G, cot):
    """Each hyperparameter's cotangent (as the engine holds it: ``(T, G)``, ``eps`` ``(G,)``)
    back in the shape it was given, through autograd's VJP of the front end's own expansion
    ``expand`` (the same sums in the same order as ``autograd.grad`` through ``sgd`` /
    ``adam``, so the result is the same bit for bit).  The expansion is linear, so any valid
    value (0.5 for every kind) serves as the point."""
    point = {k: np.full(shape, 0.5) for k, shape in shapes.items()}
    out = {}
    for kind in shapes:
        def one(x, kind=kind):
            return expand({**point, kind: x}, G)[kind]
        try:
            back, expanded = make_vjp(one)(point[kind])
        except ValueError as err:
            raise CheckpointError(f"the recorded shape {shapes[kind]} of {kind} does not fit "
                                  f"the stored schedule: {err}") from None
        if np.shape(expanded) != np.shape(cot[kind]):
            raise CheckpointError(f"the recorded shape {shapes[kind]} of {kind} expands to "
                                  f"{np.shape(expanded)}, not the stored {np.shape(cot[kind])}")
        out[kind] = np.asarray(back(cot[kind]))
    return out
