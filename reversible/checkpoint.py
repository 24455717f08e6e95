"""Save the state after an exact forward pass and load it later to run the reverse pass.

A checkpoint is one ``.npz`` file written with :func:`numpy.savez` (never
pickle) holding everything :func:`reversible.trajectory.reverse` needs: the
fixed-point ``W``, ``V``, ``W0``, ``V0``, ``frac_bits``, the information buffer
(heads, tail pointers and tail words), the schedule (``alphas``, quantised
momenta ``n``, ``group_index``), the forward statistics (as JSON) and a format
tag and version.  :func:`train` and :func:`hypergradient` also record the
layout of ``w0`` and ``meta`` and the value of ``meta``, so that the reverse pass
of a :func:`reversible.sgd` run can be resumed from the file with nothing but
the training loss.

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

from .buffer import BETA_ONE, WORD_DTYPE, InfoBuffer
from .errors import CheckpointError
from .fixedpoint import DEFAULT_FRAC_BITS, check_frac_bits
from .trajectory import Schedule, TrainState

FORMAT = "reversible-trainstate"
VERSION = 1

# arrays covered by the digest, with the dtype each must have
_ARRAYS = {
    "W": np.int64, "V": np.int64, "W0": np.int64, "V0": np.int64,
    "frac_bits": np.int64,
    "head": np.uint64, "ptr": np.int64, "tail": WORD_DTYPE,
    "alphas": np.float64, "n": np.int64, "group_index": np.int64,
    "stats_json": np.str_, "layout_json": np.str_, "meta": np.float64,
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
    }


def save(state, path, layout=None, meta=None):
    """Write ``state`` (a :class:`TrainState` after :func:`trajectory.forward`) to ``path``.

    ``layout`` (JSON-serialisable) and ``meta`` (a flat float vector) are
    optional extras that :func:`train` stores so that :func:`hypergradient`
    needs nothing but the training loss.  The file is written to a temporary
    name and renamed, so an interrupted save never leaves a half-written
    checkpoint under ``path``.  ``path`` is used as given (NumPy's automatic
    ``.npz`` suffix is avoided).
    """
    arrays = _arrays_of(state, layout, meta)
    arrays[_DIGEST_KEY] = np.array(_digest(arrays))
    path = os.fspath(path)
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
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
    return _load_all(path)[0]


def _load_all(path):
    """``(state, layout, meta)`` from a verified checkpoint."""
    path = os.fspath(path)
    arrays = _read(path)
    fmt = arrays["format"]
    if fmt.dtype.kind != "U" or fmt.shape != () or str(fmt) != FORMAT:
        raise CheckpointError(f"{path} is not a reversible TrainState checkpoint "
                              f"(format tag {fmt!r}, expected {FORMAT!r})")
    version = arrays.get("version")
    if version is not None and version.shape == () and version.dtype.kind == "i" \
            and int(version) != VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {int(version)}; this "
                              f"version of reversible reads version {VERSION}")
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


def _flat_loss(train_loss, structure, meta_structure):
    def loss_flat(w, m_flat, t):
        mm = None if meta_structure is None else meta_structure.unflatten(m_flat)
        return train_loss(structure.unflatten(w), mm, t)
    return loss_flat


def train(train_loss, w0, alphas, betas, meta=None, *, path, v0=None, frac_bits=None,
          kernel="auto", progress=False, stats=None):
    """Run the exact forward pass of :func:`reversible.sgd` and save it to ``path``.

    Same arguments and validation as ``sgd``; returns ``w_T`` in the structure
    of ``w0``.  The checkpoint also records the layout of ``w0`` and ``meta``
    and the value of ``meta``, so :func:`hypergradient` needs only the loss.
    """
    from . import api                       # late: api imports the method registry
    from .problem import Problem
    from .structure import Structure
    from .trajectory import forward

    structure = Structure(w0, "w0")
    G = structure.num_groups
    w0_flat = np.asarray(structure.flatten(w0), dtype=np.float64)
    v0_flat = np.zeros(structure.size) if v0 is None else np.asarray(
        api._flatten_like(structure, v0), dtype=np.float64)
    alphas2 = np.asarray(api._schedule(alphas, G, "alphas"), dtype=np.float64)
    betas2 = np.asarray(api._schedule(betas, G, "betas"), dtype=np.float64)
    if alphas2.shape[0] != betas2.shape[0]:
        raise ValueError(f"alphas has {alphas2.shape[0]} steps but betas has {betas2.shape[0]}; "
                         "give both one row per training step")
    meta_structure = None if meta is None else Structure(meta, "meta")
    meta_flat = None if meta is None else np.asarray(meta_structure.flatten(meta), dtype=np.float64)
    frac_bits = check_frac_bits(DEFAULT_FRAC_BITS if frac_bits is None else frac_bits)
    layout = {"w0": _tree_to_json(structure.tree),
              "meta": None if meta is None else _tree_to_json(meta_structure.tree),
              "alphas_ndim": int(np.ndim(alphas)), "betas_ndim": int(np.ndim(betas))}
    problem = Problem(_flat_loss(train_loss, structure, meta_structure), w0_flat, v0_flat,
                      alphas2, betas2, meta_flat, structure.group_index(), frac_bits, kernel,
                      progress)
    state = forward(problem.grad, w0_flat, problem.schedule(), meta_flat, v0_flat, frac_bits,
                    kernel, progress)
    save(state, path, layout, meta_flat)
    if stats is not None:
        stats.update(state.stats)
    return structure.unflatten(state.w)


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
    from .problem import Problem
    from .structure import Structure
    from .trajectory import reverse

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
    dw = np.asarray(structure.flatten(dw_T), dtype=np.float64)
    dv = None if dv_T is None else np.asarray(structure.flatten(dv_T), dtype=np.float64)
    problem = Problem(_flat_loss(train_loss, structure, meta_structure), state.w.copy(),
                      state.v.copy(), state.schedule.alphas, state.schedule.betas, meta,
                      state.schedule.group_index, state.frac_bits, kernel, progress, hvp)
    out = reverse(state, problem.vjp, dw, dv, meta, problem.meta_size, kernel, progress)
    if stats is not None:
        stats.update(state.stats)
    result = {"w0": structure.unflatten(out["w0"]), "v0": structure.unflatten(out["v0"]),
              "meta": None if meta is None else meta_structure.unflatten(out["meta"])}
    for name in ("alphas", "betas"):
        result[name] = out[name].sum(axis=1) if layout[f"{name}_ndim"] == 1 else out[name]
    return result
