"""Checkpoints: save after forward, load, reverse bit for bit; damaged or foreign files raise."""

import hashlib
import json

import numpy as np
import pytest

from reversible import checkpoint, trajectory
from reversible.errors import CheckpointError

N = 7
_rng = np.random.default_rng(3)
_B = _rng.normal(size=(N, N))
A = _B @ _B.T / N + np.eye(N)


def grad(w, meta, t):
    return A @ w + np.exp(meta) * w + np.sin(t + np.arange(N))


def vjp(w, meta, t, u):
    return grad(w, meta, t), A @ u + np.exp(meta) * u, np.exp(meta) * w * u


@pytest.fixture
def forward_state():
    """A forward pass with two groups, low and high momentum (so the tails hold words)."""
    rng = np.random.default_rng(0)
    T = 60
    gi = np.array([0, 0, 0, 1, 1, 1, 1])
    betas = np.stack([np.full(T, 0.3), np.linspace(0.8, 0.99, T)], axis=1)
    alphas = np.stack([np.full(T, 0.05), np.full(T, 0.1)], axis=1)
    sched = trajectory.Schedule.build(alphas, betas, gi, 2)
    meta = -np.ones(N)
    state = trajectory.forward(grad, rng.normal(size=N), sched, meta, 0.1 * rng.normal(size=N))
    assert state.buffer.words() > 0
    return state, meta


def _reverse(state, meta):
    return trajectory.reverse(state, vjp, np.linspace(-1, 1, N), np.ones(N), meta, N)


def test_round_trip_gives_same_hypergradient_bit_for_bit(forward_state, tmp_path):
    state, meta = forward_state
    path = tmp_path / "state.ckpt"
    assert checkpoint.save(state, path) == str(path)
    assert path.exists() and not (tmp_path / "state.ckpt.tmp").exists()
    loaded = checkpoint.load(path)
    assert np.array_equal(loaded.W, state.W) and np.array_equal(loaded.V, state.V)
    assert np.array_equal(loaded.W0, state.W0) and np.array_equal(loaded.V0, state.V0)
    assert loaded.frac_bits == state.frac_bits
    assert np.array_equal(loaded.schedule.alphas, state.schedule.alphas)
    assert np.array_equal(loaded.schedule.n, state.schedule.n)
    assert np.array_equal(loaded.schedule.group_index, state.schedule.group_index)
    assert loaded.buffer.bits() == state.buffer.bits()
    assert loaded.stats["buffer_bits"] == state.stats["buffer_bits"]
    ref = _reverse(state.copy(), meta)
    got = _reverse(loaded, meta)
    for key in ref:
        assert np.array_equal(got[key], ref[key]), key
    assert loaded.buffer.is_empty() is True and loaded.stats["reversed_exactly"] is True


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


@pytest.mark.parametrize("name", ["W", "V0", "head", "tail", "alphas", "n", "frac_bits"])
def test_altered_array_fails_integrity(forward_state, tmp_path, name):
    state, _ = forward_state
    path = tmp_path / "s.ckpt"
    checkpoint.save(state, path)
    with np.load(path, allow_pickle=False) as npz:
        a = npz[name].copy()
    flat = a.reshape(-1)
    flat[0] = flat[0] + 1 if a.dtype.kind != "f" else np.nextafter(flat[0], 1.0)
    _rewrite(path, **{name: a})
    with pytest.raises(CheckpointError, match="integrity"):
        checkpoint.load(path)


def test_consistent_digest_but_invalid_content_raises(forward_state, tmp_path):
    """Someone recomputing the digest cannot smuggle in an inconsistent state."""
    state, _ = forward_state
    path = tmp_path / "s.ckpt"
    checkpoint.save(state, path)
    for change, fragment in [({"group_index": np.full(N, 5, dtype=np.int64)}, "group_index"),
                             ({"n": np.zeros((60, 2), dtype=np.int64)}, "momenta"),
                             ({"W": np.zeros(N + 1, dtype=np.int64)}, "shape"),
                             ({"head": np.zeros(N, dtype=np.uint64)}, "heads"),
                             ({"W": np.zeros(N, dtype=np.float64)}, "dtype"),
                             ({"frac_bits": np.array(0)}, "frac_bits"),
                             ({"version": np.array(99)}, "version 99")]:
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


def test_hypergradient_needs_the_same_loss(tmp_path):
    from reversible.errors import ReversibilityError
    loss, val, p0, meta, alphas, betas = _hl_problem()
    path = tmp_path / "run.ckpt"
    w_T = checkpoint.train(loss, p0, alphas, betas, meta, path=path)
    other = lambda p, m, t: (1 + 1e-9) * loss(p, m, t)  # noqa: E731
    with pytest.raises(ReversibilityError):
        checkpoint.hypergradient(path, other, {k: np.ones_like(v) for k, v in w_T.items()})
    with pytest.raises(ValueError, match="dict with keys"):
        checkpoint.hypergradient(path, loss, np.ones(4))


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


@pytest.mark.parametrize("bad", [{"alphas": np.array([0.1, np.nan, 0.1])},
                                 {"betas": np.array([0.9, 1.5, 0.9])},
                                 {"w0": np.ones(3) + 0j}, {"stats": []}, {"progress": "yes"}])
def test_train_validates_like_sgd_and_writes_nothing(tmp_path, bad):
    """checkpoint.train and reversible.sgd share one validation path: same error, same text."""
    import autograd.numpy as anp
    import reversible
    args = {"w0": np.ones(3), "alphas": np.full(3, 0.1), "betas": np.full(3, 0.9), **bad}
    loss = lambda w, meta, t: anp.sum(w ** 2)              # noqa: E731
    with pytest.raises((TypeError, ValueError)) as from_sgd:
        reversible.sgd(loss, **args)
    with pytest.raises(type(from_sgd.value)) as from_train:
        checkpoint.train(loss, **args, path=tmp_path / "run.ckpt")
    assert str(from_train.value) == str(from_sgd.value)
    assert list(tmp_path.iterdir()) == []
