"""Checkpoints: save after forward, load, reverse bit for bit; damaged or foreign files raise.

Engine-level tests run on a state of each update rule (SGD with momentum, AdamW); the high-level
ones compare checkpoint.train / train_adam + hypergradient with autograd through reversible.sgd /
reversible.adam."""

import hashlib
import json

import numpy as np
import pytest

from reversible import checkpoint, trajectory
from reversible.adam_rule import AdamSchedule, AdamState
from reversible.buffer import BETA_ONE
from reversible.errors import CheckpointError

N = 7
_rng = np.random.default_rng(3)
_B = _rng.normal(size=(N, N))
A = _B @ _B.T / N + np.eye(N)


def grad(w, meta, t):
    return A @ w + np.exp(meta) * w + np.sin(t + np.arange(N))


def vjp(w, meta, t, u):
    return grad(w, meta, t), A @ u + np.exp(meta) * u, np.exp(meta) * w * u


RULES = ["momentum", "adam"]
GROUPS = np.array([0, 0, 0, 1, 1, 1, 1])


def _schedule(rule, T, low, high, group_index=GROUPS, G=2):
    """Two groups, one with low and one with high (per-step) momenta, so the tails hold words;
    Adam: AdamW with per-step decays, per-group eps."""
    betas = np.stack([np.full(T, low), np.linspace(high, 0.99, T)], axis=1)[:, :G]
    alphas = np.stack([np.full(T, 0.05), np.full(T, 0.1)], axis=1)[:, :G]
    if rule == "momentum":
        return trajectory.Schedule.build(alphas, betas, group_index, G)
    decay = np.stack([np.linspace(0.0, 0.02, T), np.full(T, 0.01)], axis=1)[:, :G]
    return AdamSchedule.build(0.1 * alphas, betas, np.full((T, G), 0.999), group_index, G,
                              eps=np.array([1e-8, 1e-3])[:G], weight_decay=decay)


@pytest.fixture(params=RULES)
def forward_state(request):
    """A forward pass of each update rule (momentum: with an initial velocity)."""
    rng = np.random.default_rng(0)
    meta = -np.ones(N)
    v0 = 0.1 * rng.normal(size=N) if request.param == "momentum" else None
    state = trajectory.forward(grad, rng.normal(size=N), _schedule(request.param, 60, 0.3, 0.8),
                               meta, v0)
    assert state.buffer.words() > 0
    return state, meta


def _reverse(state, meta):
    """The reverse pass with cotangents on w_T and on the optimiser state."""
    daux = np.ones(N) if isinstance(state, trajectory.TrainState) else (np.ones(N), -np.ones(N))
    return trajectory.reverse(state, vjp, np.linspace(-1, 1, N), daux, meta, N, grad=grad)


def test_round_trip_gives_same_hypergradient_bit_for_bit(forward_state, tmp_path):
    state, meta = forward_state
    path = tmp_path / "state.ckpt"
    assert checkpoint.save(state, path) == str(path)
    assert path.exists() and not (tmp_path / "state.ckpt.tmp").exists()
    loaded = checkpoint.load(path)
    assert type(loaded) is type(state)
    saved, again = checkpoint._arrays_of(state), checkpoint._arrays_of(loaded)
    assert sorted(saved) == sorted(again)
    for key in saved:               # every array: state, buffer, schedule, formats, stats
        assert np.array_equal(again[key], saved[key]), key
    assert loaded.buffer.bits() == state.buffer.bits()
    assert loaded.stats["buffer_bits"] == state.stats["buffer_bits"]
    ref = _reverse(state.copy(), meta)
    got = _reverse(loaded, meta)
    assert sorted(got) == sorted(ref)
    for key in ref:
        assert np.array_equal(got[key], ref[key]), key
    assert loaded.buffer.is_empty() is True and loaded.stats["reversed_exactly"] is True


def test_adam_state_survives_with_its_formats_and_schedule(tmp_path):
    """Every part of an AdamState the reverse pass reads comes back: moments, per-group formats
    (given by hand here), eps, decay schedule and its quantised factors."""
    sched = _schedule("adam", 12, 0.5, 0.9)
    fmt = {"w": 40, "m": np.array([30, 33]), "s": 44}
    state = trajectory.forward(grad, np.ones(N), sched, -np.ones(N), frac_bits=fmt,
                               kernel="numpy")
    checkpoint.save(state, tmp_path / "s.npz")
    loaded = checkpoint.load(tmp_path / "s.npz")
    assert isinstance(loaded, AdamState) and loaded.frac_bits == 40
    assert loaded.fmt.m.tolist() == [30, 33] and loaded.fmt.s.tolist() == [44, 44]
    assert np.array_equal(loaded.M, state.M) and np.array_equal(loaded.S, state.S)
    for name in ("n", "n2", "n_decay", "eps", "weight_decay", "alphas", "group_index"):
        assert np.array_equal(getattr(loaded.schedule, name), getattr(sched, name)), name
    assert loaded.stats["buffer_bits"] == state.stats["buffer_bits"] > 0


def test_frac_bits_and_single_group_survive(tmp_path):
    sched = trajectory.Schedule.build(np.full(10, 0.1), np.full(10, 0.5 + 2**-16),
                                      np.zeros(N, dtype=np.int64))
    state = trajectory.forward(lambda w, m, t: A @ w, np.ones(N), sched, frac_bits=33)
    checkpoint.save(state, tmp_path / "s.npz")
    loaded = checkpoint.load(tmp_path / "s.npz")
    assert loaded.frac_bits == 33
    out = trajectory.reverse(loaded, lambda w, m, t, u: (A @ w, A @ u, None), np.ones(N))
    ref = trajectory.reverse(state, lambda w, m, t, u: (A @ w, A @ u, None), np.ones(N))
    assert np.array_equal(out["alphas"], ref["alphas"])


def test_every_flipped_byte_is_detected_or_harmless(forward_state, tmp_path):
    """Flipping a byte (250 random positions) either raises CheckpointError or (zip metadata such as
    timestamps) leaves the loaded state identical to the saved one."""
    state, _ = forward_state
    path = tmp_path / "s.ckpt"
    checkpoint.save(state, path)
    raw = path.read_bytes()
    ref = checkpoint._arrays_of(checkpoint.load(path))
    bad = tmp_path / "bad.ckpt"
    detected = 0
    positions = np.random.default_rng(0).choice(len(raw), size=250, replace=False)
    for i in positions:
        b = bytearray(raw)
        b[i] ^= 0x5A
        bad.write_bytes(bytes(b))
        try:
            arrays = checkpoint._arrays_of(checkpoint.load(bad))
        except CheckpointError:
            detected += 1
            continue
        for key in ref:
            assert np.array_equal(arrays[key], ref[key]), (i, key)
    assert detected > 0.7 * positions.size


@pytest.mark.parametrize("keep", [0, 10, 100, 0.5, 0.99, -1])
def test_truncated_file_raises(forward_state, tmp_path, keep):
    state, _ = forward_state
    path = tmp_path / "s.ckpt"
    checkpoint.save(state, path)
    raw = path.read_bytes()
    cut = keep if isinstance(keep, int) and keep >= 0 else int(len(raw) * keep) if keep > 0 \
        else len(raw) - 1
    path.write_bytes(raw[:cut])
    with pytest.raises(CheckpointError, match="truncated|not a|corrupt"):
        checkpoint.load(path)


def _rewrite(path, **changes):
    """Rewrite a valid checkpoint with some arrays replaced (zip CRCs are then valid)."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays.update(changes)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return arrays


def _digest_of(arrays):
    """The documented digest, recomputed independently: SHA-256 over name, dtype, shape, bytes."""
    h = hashlib.sha256()
    for name in sorted(k for k in arrays if k != "sha256"):
        a = np.ascontiguousarray(arrays[name])
        meta = json.dumps([name, a.dtype.str, list(a.shape)]).encode()
        data = a.tobytes()
        h.update(len(meta).to_bytes(8, "little") + meta + len(data).to_bytes(8, "little") + data)
    return np.array(h.hexdigest())


def test_digest_is_sha256_of_the_arrays(forward_state, tmp_path):
    state, _ = forward_state
    checkpoint.save(state, tmp_path / "s")
    with np.load(tmp_path / "s", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    assert str(arrays["sha256"]) == str(_digest_of(arrays))


def _altered(a):
    """``a`` with its first entry changed by the smallest step of its kind."""
    if a.dtype.kind == "U":
        return np.array(str(a) + " ")
    a = a.copy()
    flat = a.reshape(-1)
    flat[0] = flat[0] + 1 if a.dtype.kind != "f" else np.nextafter(flat[0], 1.0)
    return a


def test_every_altered_array_fails_integrity(forward_state, tmp_path):
    """Each stored array of either rule's file (state, buffer, schedule, formats, tags) is
    covered by the digest."""
    state, _ = forward_state
    path = tmp_path / "s.ckpt"
    checkpoint.save(state, path)
    with np.load(path, allow_pickle=False) as npz:
        # (the format tag, version and quantum are checked first, with messages of their own)
        names = [k for k in npz.files if k not in ("sha256", "format", "version", "beta_bits")
                 and npz[k].size]
    assert {"W", "head", "tail", "alphas", "n", "frac_bits", "rule"} <= set(names)
    for name in names:
        checkpoint.save(state, path)
        with np.load(path, allow_pickle=False) as npz:
            a = npz[name]
        _rewrite(path, **{name: _altered(a)})
        with pytest.raises(CheckpointError, match="integrity"):
            checkpoint.load(path)


_INVALID = {      # per rule: (arrays replaced, error fragment), with a recomputed digest
    "both": [({"group_index": np.full(N, 5, dtype=np.int64)}, "group_index"),
             ({"n": np.zeros((60, 2), dtype=np.int64)}, "momenta"),
             ({"W": np.zeros(N + 1, dtype=np.int64)}, "shape"),
             ({"head": np.zeros(N, dtype=np.uint64)}, "heads"),
             ({"W": np.zeros(N, dtype=np.float64)}, "dtype"),
             ({"frac_bits": np.array(0)}, "frac_bits"),
             ({"version": np.array(99)}, "version 99")],
    "momentum": [({"V0": np.zeros(N - 1, dtype=np.int64)}, "V0 has shape")],
    "adam": [({"S": -np.ones(N, dtype=np.int64)}, "second moments"),
             ({"M": np.zeros((N, 1), dtype=np.int64)}, "M has shape"),
             ({"n2": np.zeros((60, 2), dtype=np.int64)}, "beta2s"),
             ({"n": np.full((60, 2), BETA_ONE, dtype=np.int64)}, "first-step betas"),
             ({"n_decay": np.full((60, 2), BETA_ONE, dtype=np.int64)}, "n_decay do not match"),
             ({"eps": np.array([1e-8, -1.0])}, "eps"),
             ({"eps": np.zeros(3)}, r"eps has shape \(3,\)"),
             ({"weight_decay": np.full((60, 2), np.nan)}, "weight_decay"),
             ({"frac_bits_s": np.array([40, 500])}, "frac_bits_s"),
             ({"rule": np.array("momentum")}, "missing.*V0")],
}


def test_consistent_digest_but_invalid_content_raises(forward_state, tmp_path):
    """Someone recomputing the digest cannot smuggle in an inconsistent state."""
    state, _ = forward_state
    path = tmp_path / "s.ckpt"
    rule = "momentum" if isinstance(state, trajectory.TrainState) else "adam"
    for change, fragment in _INVALID["both"] + _INVALID[rule]:
        checkpoint.save(state, path)
        arrays = _rewrite(path, **change)
        _rewrite(path, sha256=_digest_of(arrays))
        with pytest.raises(CheckpointError, match=fragment):
            checkpoint.load(path)


def test_foreign_files_raise(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a checkpoint\n")
    other = tmp_path / "other.npz"
    np.savez(other, x=np.arange(3))
    single = tmp_path / "one.npy"
    np.save(single, np.arange(3))
    for path, fragment in [(text, "cannot read"), (other, "not a reversible checkpoint"),
                           (single, "single array"), (tmp_path / "missing", "does not exist")]:
        with pytest.raises(CheckpointError, match=fragment):
            checkpoint.load(path)


def test_pickled_object_array_is_refused(forward_state, tmp_path):
    state, _ = forward_state
    path = tmp_path / "s.ckpt"
    checkpoint.save(state, path)
    _rewrite(path, stats_json=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(CheckpointError, match="pickle"):
        checkpoint.load(path)


def test_load_never_allows_pickle(forward_state, tmp_path, monkeypatch):
    state, _ = forward_state
    checkpoint.save(state, tmp_path / "s")
    seen = []
    real_load = np.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("allow_pickle"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(np, "load", spy)
    checkpoint.load(tmp_path / "s")
    assert seen == [False]


def test_save_rejects_other_objects(tmp_path):
    with pytest.raises(TypeError, match="TrainState"):
        checkpoint.save({"W": np.zeros(3)}, tmp_path / "x")


# ------------------------------------------------- high level: train / hypergradient
def _hl_problem():
    import autograd.numpy as anp
    rng = np.random.default_rng(5)
    Xd, yd = rng.normal(size=(20, 3)), rng.normal(size=20)

    def loss(p, meta, t):
        r = (3 * t + np.arange(5)) % 20
        fit = anp.mean((anp.dot(Xd[r], p["w"]) + p["b"] - yd[r]) ** 2)
        return fit + 0.5 * anp.exp(meta["l2"]) * anp.sum(p["w"] ** 2)

    def val(p):
        return anp.sum(p["w"] ** 2) + anp.sum(p["b"])

    p0 = {"w": rng.normal(size=3), "b": np.zeros(1)}
    T = 25
    return loss, val, p0, {"l2": np.array(-1.0)}, np.full(T, 0.1), \
        np.stack([np.full(T, 0.9), np.full(T, 0.4)], axis=1)


def test_train_then_hypergradient_equals_sgd_bit_for_bit(tmp_path):
    import autograd
    import reversible
    loss, val, p0, meta, alphas, betas = _hl_problem()
    path = tmp_path / "run.ckpt"
    stats = {}
    w_T = checkpoint.train(loss, p0, alphas, betas, meta, path=path, stats=stats)
    ref = reversible.sgd(loss, p0, alphas, betas, meta)
    assert list(w_T) == ["w", "b"] and all(np.array_equal(w_T[k], ref[k]) for k in p0)
    assert stats["buffer_bits"] > 0
    out = checkpoint.hypergradient(path, loss, autograd.grad(val)(w_T))
    g = autograd.grad(lambda *a: val(reversible.sgd(loss, *a[:4], v0=a[4])), (0, 1, 2, 3, 4))(
        p0, alphas, betas, meta, {k: np.zeros_like(v) for k, v in p0.items()})
    assert out["alphas"].shape == (25,) and out["betas"].shape == (25, 2)
    assert np.array_equal(out["alphas"], g[1]) and np.array_equal(out["betas"], g[2])
    assert np.array_equal(out["meta"]["l2"], g[3]["l2"])
    for k in p0:
        assert np.array_equal(out["w0"][k], g[0][k]) and np.array_equal(out["v0"][k], g[4][k])


# Adam / AdamW configurations: every hyperparameter kind in each of the shapes reversible.adam
# accepts ((T,) or (T, G) schedules, scalar / per-group eps, scalar / per-group / (T, G) decay)
_ADAM_CASES = {
    "per-group-decay": dict(alphas=np.full(25, 0.05),
                            beta1s=np.stack([np.full(25, 0.9), np.full(25, 0.5)], axis=1),
                            beta2s=np.full(25, 0.999), eps=1e-8,
                            weight_decay=np.array([0.02, 0.0])),
    "schedules": dict(alphas=np.stack([np.linspace(0.05, 0.01, 25), np.full(25, 0.03)], axis=1),
                      beta1s=np.linspace(0.8, 0.95, 25),
                      beta2s=np.stack([np.full(25, 0.99), np.full(25, 0.9)], axis=1),
                      eps=np.array([1e-8, 1e-3]),
                      weight_decay=np.stack([np.linspace(0.0, 0.05, 25), np.full(25, 0.01)], 1)),
    "scalar-decay": dict(alphas=np.full(25, 0.05), beta1s=np.full(25, 0.9),
                         beta2s=np.full(25, 0.999), eps=1e-6, weight_decay=0.03),
}
_ADAM_KINDS = ("alphas", "beta1s", "beta2s", "eps", "weight_decay")


@pytest.mark.parametrize("case", sorted(_ADAM_CASES))
def test_train_adam_then_hypergradient_equals_adam_bit_for_bit(tmp_path, case):
    """checkpoint.train_adam + hypergradient give autograd.grad through reversible.adam
    (method "exact"): the same w_T and, bit for bit and in the shapes given, the hypergradient
    of every kind."""
    import autograd
    import reversible
    loss, val, p0, meta, _, _ = _hl_problem()
    hyper = _ADAM_CASES[case]
    path = tmp_path / "run.ckpt"
    stats = {}
    w_T = checkpoint.train_adam(loss, p0, hyper["alphas"], hyper["beta1s"], hyper["beta2s"],
                                meta, path=path, eps=hyper["eps"],
                                weight_decay=hyper["weight_decay"], stats=stats)
    ref_stats = {}
    ref = reversible.adam(loss, p0, hyper["alphas"], hyper["beta1s"], hyper["beta2s"], meta,
                          eps=hyper["eps"], weight_decay=hyper["weight_decay"], stats=ref_stats)
    assert list(w_T) == ["w", "b"] and all(np.array_equal(w_T[k], ref[k]) for k in p0)
    assert stats["buffer_bits"] == ref_stats["buffer_bits"] > 0
    assert stats["adam_frac_bits"] == ref_stats["adam_frac_bits"]
    out = checkpoint.hypergradient(path, loss, autograd.grad(val)(w_T))

    def through_adam(w0, meta, alphas, beta1s, beta2s, eps, weight_decay):
        return val(reversible.adam(loss, w0, alphas, beta1s, beta2s, meta, eps=eps,
                                   weight_decay=weight_decay, method="exact"))

    g = autograd.grad(through_adam, tuple(range(7)))(p0, meta, *(hyper[k] for k in _ADAM_KINDS))
    assert sorted(out) == sorted(("w0", "meta") + _ADAM_KINDS)
    for kind, expected in zip(_ADAM_KINDS, g[2:]):
        assert np.shape(out[kind]) == np.shape(hyper[kind]) == np.shape(expected), kind
        assert np.array_equal(out[kind], expected), kind
        assert np.all(out[kind] != 0) or kind == "weight_decay", kind      # all of them reached
    assert np.array_equal(out["meta"]["l2"], g[1]["l2"]) and out["meta"]["l2"] != 0
    for k in p0:
        assert np.array_equal(out["w0"][k], g[0][k]), k


def test_adam_hypergradient_without_meta_and_refusing_dv_T(tmp_path):
    """meta=None comes back as None; dv_T (SGD's final velocity) has no meaning for Adam."""
    import autograd.numpy as anp
    import reversible
    loss = lambda w, meta, t: anp.sum((w - np.cos(t)) ** 2)            # noqa: E731
    path = tmp_path / "run.ckpt"
    w_T = checkpoint.train_adam(loss, np.ones(3), np.full(8, 0.1), np.full(8, 0.9),
                                np.full(8, 0.99), path=path)
    out = checkpoint.hypergradient(path, loss, np.ones(3))
    ref = reversible.adam(loss, np.ones(3), np.full(8, 0.1), np.full(8, 0.9), np.full(8, 0.99))
    assert np.array_equal(w_T, ref) and out["meta"] is None and out["w0"].shape == (3,)
    with pytest.raises(ValueError, match="dv_T .*holds a reversible.adam run.*leave dv_T out"):
        checkpoint.hypergradient(path, loss, np.ones(3), dv_T=np.ones(3))


def _train_rule(rule, loss, path):
    _, _, p0, meta, alphas, betas = _hl_problem()
    if rule == "momentum":
        return checkpoint.train(loss, p0, alphas, betas, meta, path=path)
    return checkpoint.train_adam(loss, p0, alphas, betas, np.full(alphas.shape, 0.99), meta,
                                 path=path, weight_decay=0.01)


@pytest.mark.parametrize("rule", RULES)
def test_hypergradient_needs_the_same_loss(tmp_path, rule):
    from reversible.errors import ReversibilityError
    loss = _hl_problem()[0]
    path = tmp_path / "run.ckpt"
    w_T = _train_rule(rule, loss, path)
    other = lambda p, m, t: (1 + 1e-9) * loss(p, m, t)  # noqa: E731
    with pytest.raises(ReversibilityError):
        checkpoint.hypergradient(path, other, {k: np.ones_like(v) for k, v in w_T.items()})
    with pytest.raises(ValueError, match="dict with keys"):
        checkpoint.hypergradient(path, loss, np.ones(4))
    with pytest.raises(ValueError, match=r"w0\['w'\]|shape"):
        checkpoint.hypergradient(path, loss, {"w": np.ones(4), "b": np.ones(1)})


def test_version_2_sgd_file_is_still_read(tmp_path):
    """A file of format version 2 (reversible 0.2: no rule name, hyperparameter layout as
    ndims) loads as SGD with momentum and gives the same hypergradient."""
    loss, val, p0, meta, alphas, betas = _hl_problem()
    path, old = tmp_path / "run.ckpt", tmp_path / "old.ckpt"
    checkpoint.train(loss, p0, alphas, betas, meta, path=path)
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files if k not in ("rule", "sha256")}
    layout = json.loads(str(arrays["layout_json"]))
    del layout["shapes"]
    layout.update(alphas_ndim=1, betas_ndim=2)
    arrays.update(version=np.array(2, dtype=np.int64), layout_json=np.array(json.dumps(layout)))
    arrays["sha256"] = _digest_of(arrays)
    with open(old, "wb") as fh:
        np.savez(fh, **arrays)
    dw = {k: np.ones_like(v) for k, v in p0.items()}
    ref, got = checkpoint.hypergradient(path, loss, dw), checkpoint.hypergradient(old, loss, dw)
    assert isinstance(checkpoint.load(old), trajectory.TrainState)
    for key in ("alphas", "betas"):
        assert np.array_equal(got[key], ref[key]) and got[key].shape == ref[key].shape
    for k in p0:
        assert np.array_equal(got["w0"][k], ref["w0"][k])


def test_hypergradient_needs_a_layout(forward_state, tmp_path):
    state, _ = forward_state
    checkpoint.save(state, tmp_path / "s")
    with pytest.raises(CheckpointError, match="layout"):
        checkpoint.hypergradient(tmp_path / "s", lambda w, m, t: 0.0, np.ones(N))


def test_save_leaves_no_lock_or_temporary_files(forward_state, tmp_path):
    state, _ = forward_state
    checkpoint.save(state, tmp_path / "s.ckpt")
    checkpoint.save(state, tmp_path / "s.ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.ckpt"]


def test_without_flock_a_leftover_lock_file_is_reported(forward_state, tmp_path, monkeypatch):
    """Where fcntl is missing (Windows) the lock is an O_EXCL file; a leftover one is named."""
    import sys
    state, _ = forward_state
    monkeypatch.setitem(sys.modules, "fcntl", None)
    path = tmp_path / "s.ckpt"
    checkpoint.save(state, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.ckpt"]
    (tmp_path / "s.ckpt.lock").write_text("4242 otherhost\n")
    with pytest.raises(CheckpointError, match=r"pid 4242 on otherhost.*delete .*s\.ckpt\.lock"):
        checkpoint.save(state, path)


def test_check_writable_accepts_a_fresh_path_and_leaves_nothing(tmp_path):
    checkpoint.check_writable(tmp_path / "new.ckpt")
    assert list(tmp_path.iterdir()) == []


_SGD_ARGS = {"w0": np.ones(3), "alphas": np.full(3, 0.1), "betas": np.full(3, 0.9)}
_ADAM_ARGS = {"w0": np.ones(3), "alphas": np.full(3, 0.1), "beta1s": np.full(3, 0.9),
              "beta2s": np.full(3, 0.999)}


@pytest.mark.parametrize("rule, bad", [("sgd", b) for b in [{"alphas": np.array([0.1, np.nan, 0.1])},
                                 {"betas": np.array([0.9, 1.5, 0.9])},
                                 {"w0": np.ones(3) + 0j}, {"stats": []}, {"progress": "yes"}]]
                         + [("adam", b) for b in [{"beta2s": np.full(3, 1.5)}, {"eps": -1.0},
                                 {"weight_decay": -0.1}, {"weight_decay": np.ones((2, 2))},
                                 {"beta1s": np.ones(3)}, {"frac_bits": {"x": 3}},
                                 {"w0": np.ones(3) + 0j}, {"stats": []}]])
def test_train_validates_like_its_front_end_and_writes_nothing(tmp_path, rule, bad):
    """checkpoint.train / train_adam share reversible.sgd's / adam's validation: same error."""
    import autograd.numpy as anp
    import reversible
    front, train, base = ((reversible.sgd, checkpoint.train, _SGD_ARGS) if rule == "sgd" else
                          (reversible.adam, checkpoint.train_adam, _ADAM_ARGS))
    args = {**base, **bad}
    loss = lambda w, meta, t: anp.sum(w ** 2)              # noqa: E731
    with pytest.raises((TypeError, ValueError)) as from_front:
        front(loss, **args)
    with pytest.raises(type(from_front.value)) as from_train:
        train(loss, **args, path=tmp_path / "run.ckpt")
    assert str(from_train.value) == str(from_front.value)
    assert list(tmp_path.iterdir()) == []
