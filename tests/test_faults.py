"""Fault injection: each test injects one real fault and asserts a loud, specific outcome with
nothing lost.  One section per helper; each section names the categories it covers."""

import warnings

import autograd.numpy as anp
import numpy as np
import pytest

import reversible

# --- inputs to reversible.sgd (frontend) ---
#
# complex inputs (w0, v0, alphas, betas, meta, a leaf inside a container): TypeError naming it;
# wrong kinds of sgd's own arguments (stats=[], progress="yes", kernel=3, a loss that is not
#   callable, text or boolean arrays): TypeError naming the argument;
# NaN / Inf / non-positive step sizes and momenta outside (0, 1] or below the quantum:
#   ValueError naming the argument, step and group;
# frac_bits too coarse for the increments: refused (hopeless) or ResolutionWarning (coarse),
#   each naming the frac_bits that would do.
# Every refused call leaves the caller's arrays and stats dict untouched.

from reversible.buffer import BETA_ONE  # noqa: E402
from reversible.errors import ResolutionWarning  # noqa: E402

_rng = np.random.default_rng(0)
_X, _Y = _rng.normal(size=(30, 4)), _rng.normal(size=30)
_T = 12


def _loss(w, meta, t):
    w = anp.concatenate([anp.ravel(x) for x in w.values()]) if isinstance(w, dict) else w
    r = (5 * t + np.arange(8)) % 30
    out = anp.mean((anp.dot(_X[r], w) - _Y[r]) ** 2)
    return out if meta is None else out + anp.exp(meta[0]) * anp.sum(w ** 2)


def _call(**changes):
    args = dict(train_loss=_loss, w0=0.3 * np.ones(4), alphas=np.full(_T, 0.05),
                betas=np.full(_T, 0.9), meta=None)
    args.update(changes)
    return reversible.sgd(args.pop("train_loss"), args.pop("w0"), args.pop("alphas"),
                          args.pop("betas"), args.pop("meta"), **args)


_TYPE_FAULTS = [
    (dict(w0=0.3 * np.ones(4) + 0j), "w0 is complex"),
    (dict(w0={"a": np.ones(2), "b": np.ones(2, np.complex128)}), r"w0\['b'\] is complex"),
    (dict(v0=np.ones(4) * 1j), "v0 is complex"),
    (dict(alphas=np.full(_T, 0.05 + 0.01j)), "alphas is complex"),
    (dict(betas=np.full(_T, 0.9 + 0j)), "betas is complex"),
    (dict(meta=np.array([0.1j])), "meta is complex"),
    (dict(w0=np.array(["0.1"] * 4)), "w0 must be a real float array"),
    (dict(alphas=np.ones(_T, bool)), "alphas must be a real float array"),
    (dict(stats=[]), "stats must be a dict"),
    (dict(stats="stats"), "stats must be a dict"),
    (dict(progress="no"), "progress must be True or False"),
    (dict(kernel=None), "kernel must be a kernel name"),
    (dict(train_loss=None), "train_loss must be a function"),
]


@pytest.mark.parametrize("changes, fragment", _TYPE_FAULTS)
def test_wrong_kind_of_value_is_a_type_error(changes, fragment):
    with pytest.raises(TypeError, match=fragment):
        _call(**changes)


_VALUE_FAULTS = [
    (dict(alphas=np.full(_T, np.nan)), "alphas contains NaN or Inf"),
    (dict(alphas=np.r_[np.full(_T - 1, 0.05), np.inf]), "alphas contains NaN or Inf"),
    (dict(alphas=np.r_[0.05, 0.0, np.full(_T - 2, 0.05)]),
     r"alphas must lie in \(0, inf\); got 0.0 at step 1"),
    (dict(alphas=np.full(_T, -0.05)), r"alphas must lie in \(0, inf\); got -0.05 at step 0"),
    (dict(betas=np.full(_T, np.nan)), "betas contains NaN or Inf"),
    (dict(betas=np.full(_T, 1.0 + 1e-9)), r"betas must lie in \(0, 1\]"),
    (dict(betas=np.zeros(_T)), r"betas must lie in \(0, 1\]"),
    (dict(betas=np.full(_T, 0.4 / BETA_ONE)), "rounds to zero"),
    (dict(w0=np.array([0.1, np.nan, 0.0, 0.0])), "w0 contains NaN or Inf"),
    (dict(meta=np.array([np.inf])), "meta contains NaN or Inf"),
    (dict(frac_bits=2.5), "frac_bits must be an integer"),
    (dict(frac_bits=True), "frac_bits must be an integer"),
    (dict(hvp="backward"), "hvp must be one of"),
    (dict(frac_bits=8), r"frac_bits=8 .*rounds the training increments"),
]


@pytest.mark.parametrize("changes, fragment", _VALUE_FAULTS)
def test_bad_value_is_a_value_error(changes, fragment):
    with pytest.raises(ValueError, match=fragment):
        _call(**changes)


def test_refused_call_leaves_inputs_and_stats_untouched():
    w0, alphas, stats = 0.3 * np.ones(4), np.full(_T, 0.05), {"mine": 1}
    copies = w0.copy(), alphas.copy()
    with pytest.raises(ValueError):
        _call(w0=w0, alphas=alphas, betas=np.full(_T, 1.5), stats=stats)
    assert stats == {"mine": 1}
    assert np.array_equal(w0, copies[0]) and np.array_equal(alphas, copies[1])


def test_coarse_frac_bits_warns_and_says_what_would_do():
    stats = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _call(frac_bits=14, stats=stats)
    msgs = [str(w.message) for w in caught if issubclass(w.category, ResolutionWarning)]
    assert len(msgs) == 1 and "frac_bits=14" in msgs[0] and "would bring the rounding" in msgs[0]
    assert 1e-4 < stats["first_step_rounding"] < 1e-2


# --- approximate methods (adam) ---
# Each float method trains and back-propagates in float64; a NaN or Inf in a gradient,
# a Hessian-vector product or the state must raise NonFiniteError naming the step, as the
# exact engine does, instead of returning NaN hypergradients.  Method options that would be
# silently rounded or accepted (fractional K, NaN step sizes, negative tolerances) are refused.

import autograd  # noqa: E402
from autograd.extend import defjvp, defvjp, primitive  # noqa: E402

from reversible.errors import NonFiniteError  # noqa: E402


_T = 8
_FLOAT_METHODS = ["exact", "unrolled", "checkpointed", "truncated", "drmad", "drmad_hybrid",
                  "forward", "neumann", "cg", "identity"]
_ADAM_METHODS = ["exact", "unrolled", "checkpointed", "truncated", "drmad", "forward"]


def _loss_nan_at(step):
    def loss(w, meta, t):
        base = anp.sum(w ** 2) + anp.sum(anp.exp(meta) * w ** 2)
        if t == step:
            return base + anp.sqrt(w[0] - 10.0)            # NaN gradient (sqrt of a negative)
        return base
    return loss


@primitive
def _unit(x):
    """``ones_like(x)`` whose own derivative is NaN: a term with finite gradient, NaN curvature."""
    return np.ones_like(x)


defvjp(_unit, lambda ans, x: lambda g: g * np.nan)
defjvp(_unit, lambda g, ans, x: g * np.nan)


@primitive
def _identity_with_nan_curvature(x):
    return x


defvjp(_identity_with_nan_curvature, lambda ans, x: lambda g: g * _unit(x))
defjvp(_identity_with_nan_curvature, lambda g, ans, x: g * _unit(x))


def _hypergrad(train, method, loss, **options):
    w0, meta = np.full(3, 0.5), np.zeros(3)

    def f(m):
        if train == "sgd":
            w = reversible.sgd(loss, w0, np.full(_T, 0.1), np.full(_T, 0.9), m, method=method,
                               **options)
        else:
            w = reversible.adam(loss, w0, np.full(_T, 0.05), np.full(_T, 0.9), np.full(_T, 0.99),
                                m, method=method, **options)
        return anp.sum(w ** 2)

    return autograd.grad(f)(meta)


@pytest.mark.parametrize("method", _FLOAT_METHODS)
@pytest.mark.parametrize("step", [0, 5])
def test_sgd_methods_name_the_step_of_a_nan_gradient(method, step):
    with np.errstate(invalid="ignore"), pytest.raises(NonFiniteError, match=f"at step {step}"):
        _hypergrad("sgd", method, _loss_nan_at(step))


@pytest.mark.parametrize("method", _ADAM_METHODS)
@pytest.mark.parametrize("step", [0, 5])
def test_adam_methods_name_the_step_of_a_nan_gradient(method, step):
    with np.errstate(invalid="ignore"), pytest.raises(NonFiniteError, match=f"at step {step}"):
        _hypergrad("adam", method, _loss_nan_at(step))


def test_drmad_hybrid_blames_the_step_not_w0():
    with np.errstate(invalid="ignore"), pytest.raises(NonFiniteError) as err:
        _hypergrad("sgd", "drmad_hybrid", _loss_nan_at(2), K=3)
    assert "at step 2" in str(err.value) and "w0" not in str(err.value)


@pytest.mark.parametrize("method", ["checkpointed", "truncated", "drmad", "forward"])
def test_nan_hessian_vector_product_names_its_step(method):
    """A loss whose gradient is finite but whose curvature is not at step 3."""
    def loss(w, meta, t):
        base = anp.sum(w ** 2) + anp.sum(anp.exp(meta) * w ** 2)
        return base + (anp.sum(_identity_with_nan_curvature(w)) if t == 3 else 0.0)

    with np.errstate(invalid="ignore", divide="ignore"), \
            pytest.raises(NonFiniteError, match="at step 3"):
        _hypergrad("sgd", method, loss, **({"K": _T} if method == "truncated" else {}))


@pytest.mark.parametrize("method, options, fragment", [
    ("truncated", {"K": 2.5}, "K must be an integer"),
    ("truncated", {"K": np.nan}, "K must be an integer"),
    ("drmad_hybrid", {"K": 1.5}, "K must be an integer"),
    ("checkpointed", {"segment": 2.5}, "segment must be an integer"),
    ("checkpointed", {"segment": 0}, "segment must be an integer >= 1"),
    ("drmad", {"reverse_steps": 3.5}, "reverse_steps must be an integer"),
    ("drmad", {"velocity": "bogus"}, "velocity must be 'path' or 'interpolate'"),
    ("neumann", {"step": np.nan}, "step must be finite and > 0"),
    ("neumann", {"step": -0.1}, "step must be finite and > 0"),
    ("neumann", {"terms": 2.5}, "terms must be an integer"),
    ("cg", {"tol": -1}, "tol must be a finite number >= 0"),
    ("cg", {"tol": np.nan}, "tol must be a finite number"),
    ("cg", {"damping": np.inf}, "damping must be a finite number"),
    ("cg", {"iterations": 1.5}, "iterations must be an integer"),
    ("identity", {"scale": np.nan}, "scale must be a finite number"),
    ("identity", {"at_steps": 0}, "at_steps must be an integer >= 1"),
    ("forward", {"basis": {"meta": np.full((1, 3), np.nan)}}, "must be finite"),
])
def test_method_options_are_never_silently_rounded_or_accepted(method, options, fragment):
    with pytest.raises(ValueError, match=fragment):
        _hypergrad("sgd", method, _loss_nan_at(-1), **options)


@pytest.mark.parametrize("method, options, fragment", [
    ("truncated", {"K": 2.5}, "K must be an integer"),
    ("checkpointed", {"segment": 1.5}, "segment must be an integer"),
    ("drmad", {"velocity": "path"}, "needs a momentum velocity"),
    ("cg", {}, "does not support Adam"),
])
def test_adam_method_options_are_checked(method, options, fragment):
    with pytest.raises(ValueError, match=fragment):
        _hypergrad("adam", method, _loss_nan_at(-1), **options)


# --- ES / PES (longh) ---
#
# non-finite weights in a particle run (NaN loss, divergence): NonFiniteError naming step and
#   particle; a perturbed momentum outside (0, 1]: ValueError naming particle, group and step;
# a non-finite exact hypergradient in the smoothed reference; a non-finite online PES loss.


def _es_loss(w, m, t):
    return 0.5 * anp.sum(w ** 2) * (1.0 + m[0])


@pytest.mark.parametrize("method", ["es", "pes"])
def test_es_nan_in_the_run_names_the_step_and_particle(method):
    def loss(w, m, t):                      # NaN gradient from step 3 on
        return 0.5 * anp.sum(w ** 2) * (np.nan if t >= 3 else 1.0 + m[0])
    with pytest.raises(reversible.NonFiniteError, match=r"particle \d+ .*step 3"):
        reversible.sgd(loss, np.ones(3), np.full(6, 0.1), np.full(6, 0.5), np.array([0.1]),
                       method=method, sigma=0.1, particles=4)


def test_es_divergent_particle_is_named():
    """A perturbation that makes training blow up: Inf weights at some step, named."""
    with pytest.raises(reversible.NonFiniteError, match="lower sigma"):
        reversible.sgd(lambda w, m, t: anp.sum(anp.exp(m[0] * w)), np.ones(2), np.full(200, 1.0),
                       np.full(200, 0.9), np.array([50.0]), method="es", sigma=5.0, particles=4)


def test_es_perturbed_momentum_outside_its_range_is_loud():
    with pytest.raises(ValueError, match=r"momentum of particle .* step \d+ .*outside \(0, 1\]"):
        reversible.sgd(_es_loss, np.ones(2), np.full(5, 0.1), np.full(5, 0.99), np.array([0.1]),
                       method="es", sigma={"betas": 0.5}, particles=4)


def test_smoothed_reference_with_a_nonfinite_gradient_is_loud():
    from autograd import grad
    from reversible.smoothed import smoothed_gradient
    with pytest.raises(FloatingPointError, match="NaN or Inf"):
        smoothed_gradient(grad(lambda x: anp.sum(anp.sqrt(x))), np.array([0.01]), 1.0,
                          samples=20, seed=0)


def test_online_pes_nonfinite_loss_is_loud():
    from reversible.online import PersistentES, train_online
    est = PersistentES(K=2, sigma=0.1, particles=4)
    with pytest.raises(reversible.NonFiniteError, match="PES"):
        train_online(lambda w, m, t: anp.sum(w ** 2) * m[0], lambda w, t: anp.sum(w) * np.nan,
                     np.ones(2), np.array([1.0]), 4, est, lr=0.1, hyper_lr=0.1)


# --- checkpoints, Omniglot / IDX loaders, sweeps, optimize (faults helper) ---
#
# checkpoints (SGD-with-momentum and Adam files alike): concurrent writers, SIGKILL during a
#   save, missing / read-only directory, format version, truncated or altered file
# loaders: Omniglot member names escaping the archive, RGBA and 16-bit PNGs, gzip bomb,
#   IDX dimensions overflowing int64
# sweeps: deleted / truncated / altered point file, truncated manifest, a point that raises
# optimize: invalid meta-optimiser options

import gzip  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
import zipfile  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402
from reversible import checkpoint, trajectory  # noqa: E402
from reversible.adam_rule import AdamSchedule  # noqa: E402
from reversible import data as D  # noqa: E402
from reversible.errors import CheckpointError  # noqa: E402
from reversible.sweep import SweepError, SweepWarning, load_points, point_path, sweep  # noqa: E402


_FORK = sys.platform.startswith("linux")
needs_fork = pytest.mark.skipif(not _FORK, reason="uses fork() to run real concurrent writers")


# every checkpoint fault is injected into a file of each update rule
_RULES = ["momentum", "adam"]


def _state(n=16, steps=4, seed=0, rule="momentum"):
    """The state after a short exact forward pass (betas 0.9, AdamW's decay 1 - 5e-4, so the
    buffer holds bits): a TrainState (momentum) or an AdamState (adam)."""
    rng = np.random.default_rng(seed)
    group = np.zeros(n, dtype=np.int64)
    if rule == "momentum":
        sched = trajectory.Schedule.build(np.full(steps, 0.05), np.full(steps, 0.9), group)
    else:
        sched = AdamSchedule.build(np.full(steps, 0.05), np.full(steps, 0.9),
                                   np.full(steps, 0.999), group, weight_decay=0.01)
    return trajectory.forward(lambda w, m, t: 0.5 * w + np.cos(t), rng.normal(size=n), sched,
                              kernel="numpy")


def _optimiser_state(s):
    return (s.V, s.V0) if isinstance(s, trajectory.TrainState) else (s.M, s.S)


def _same(a, b):
    return (type(a) is type(b) and np.array_equal(a.W, b.W) and np.array_equal(a.W0, b.W0)
            and all(np.array_equal(x, y) for x, y in zip(_optimiser_state(a), _optimiser_state(b)))
            and a.buffer.bits() == b.buffer.bits()
            and np.array_equal(a.schedule.alphas, b.schedule.alphas))


def _train(rule, path):
    """checkpoint.train / train_adam of a tiny problem into ``path``."""
    if rule == "momentum":
        return checkpoint.train(_quadratic_loss, np.ones(3), np.full(5, 0.1), np.full(5, 0.9),
                                path=path)
    return checkpoint.train_adam(_quadratic_loss, np.ones(3), np.full(5, 0.1), np.full(5, 0.9),
                                 np.full(5, 0.999), path=path, weight_decay=0.01)


def _leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".")
                  or p.name.endswith(".lock"))


@needs_fork
@pytest.mark.parametrize("rule", _RULES)
def test_checkpoint_concurrent_writer_is_refused_and_nothing_is_lost(tmp_path, rule):
    """A second process saving while the first holds the path gets an error naming the first."""
    ctx = multiprocessing.get_context("fork")
    path = tmp_path / "run.ckpt"
    mine, theirs = _state(seed=1, rule=rule), _state(seed=2, rule=rule)
    inside, release = ctx.Event(), ctx.Event()

    def writer():
        real = checkpoint.remove_temporaries

        def pause_under_lock(p):                 # the child is inside save(), holding the lock
            inside.set()
            release.wait(30)
            return real(p)
        checkpoint.remove_temporaries = pause_under_lock
        checkpoint.save(theirs, path)

    child = ctx.Process(target=writer)
    child.start()
    try:
        assert inside.wait(30)
        with pytest.raises(CheckpointError, match=f"another process \\(pid {child.pid}"):
            checkpoint.save(mine, path)
    finally:
        release.set()
        child.join(30)
    assert child.exitcode == 0
    assert _same(checkpoint.load(path), theirs)          # the first writer's state is intact
    checkpoint.save(mine, path)                          # the refused state is still ours to save
    assert _same(checkpoint.load(path), mine)
    assert _leftovers(tmp_path) == []


@needs_fork
@pytest.mark.parametrize("rule", _RULES)
def test_checkpoint_train_clashing_with_a_writer_fails_before_training(tmp_path, rule):
    ctx = multiprocessing.get_context("fork")
    path = tmp_path / "run.ckpt"
    theirs = _state(seed=2, rule=rule)
    inside, release = ctx.Event(), ctx.Event()

    def writer():
        real = checkpoint.remove_temporaries

        def pause_under_lock(p):
            inside.set()
            release.wait(30)
            return real(p)
        checkpoint.remove_temporaries = pause_under_lock
        checkpoint.save(theirs, path)

    child = ctx.Process(target=writer)
    child.start()
    _quadratic_loss.calls = 0
    try:
        assert inside.wait(30)
        with pytest.raises(CheckpointError, match=f"pid {child.pid}"):
            _train(rule, path)
    finally:
        release.set()
        child.join(30)
    assert _quadratic_loss.calls == 0 and child.exitcode == 0
    assert _same(checkpoint.load(path), theirs)


def _save_loop(path, seed, rounds, results, rule):
    state = _state(seed=seed, rule=rule)
    for _ in range(rounds):
        try:
            checkpoint.save(state, path)
            results.put((seed, "ok"))
        except CheckpointError as err:
            results.put((seed, str(err)))


@needs_fork
@pytest.mark.parametrize("rule", _RULES)
def test_checkpoint_racing_writers_never_mix_or_lose_silently(tmp_path, rule):
    """Two processes saving to one path in a loop: every save succeeds whole or is refused."""
    ctx = multiprocessing.get_context("fork")
    path = tmp_path / "run.ckpt"
    results = ctx.Queue()
    procs = [ctx.Process(target=_save_loop, args=(path, seed, 15, results, rule))
             for seed in (3, 4)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=60) for _ in range(30)]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    for seed, outcome in outcomes:
        assert outcome == "ok" or "another process" in outcome, outcome
    final = checkpoint.load(path)
    assert any(_same(final, _state(seed=s, rule=rule)) for s, o in outcomes if o == "ok")
    assert _leftovers(tmp_path) == []


@needs_fork
@pytest.mark.parametrize("rule", _RULES)
def test_checkpoint_sigkill_during_save_keeps_the_old_file_and_is_cleaned(tmp_path, rule):
    ctx = multiprocessing.get_context("fork")
    path = tmp_path / "run.ckpt"
    old, new = _state(seed=5, rule=rule), _state(n=150_000, steps=2, seed=6, rule=rule)  # >= 8 MB
    checkpoint.save(old, path)
    written = ctx.Event()

    def killed_writer():
        real = np.savez

        def savez_then_hang(fh, **arrays):
            real(fh, **arrays)
            fh.flush()
            written.set()
            time.sleep(60)
        np.savez = savez_then_hang
        checkpoint.save(new, path)

    child = ctx.Process(target=killed_writer)
    child.start()
    assert written.wait(60)
    os.kill(child.pid, signal.SIGKILL)
    child.join(30)
    orphans = [p for p in tmp_path.iterdir() if p.name.endswith(".reversible-tmp")]
    assert len(orphans) == 1 and orphans[0].stat().st_size > 4_000_000   # the fault is real
    assert _same(checkpoint.load(path), old)                             # nothing half-written
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        checkpoint.save(new, path)
    messages = " | ".join(str(w.message) for w in caught)
    assert f"pid {child.pid} did not finish" in messages and orphans[0].name in messages
    assert _leftovers(tmp_path) == []
    assert _same(checkpoint.load(path), new)


def _quadratic_loss(w, meta, t):
    import autograd.numpy as anp
    _quadratic_loss.calls += 1
    return anp.sum(w ** 2)


_quadratic_loss.calls = 0


def _read_only_dir(tmp_path):
    if os.geteuid() == 0:                       # root ignores permission bits
        return "/sys"
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    return str(d)


@pytest.mark.parametrize("rule", _RULES)
@pytest.mark.parametrize("where, fragment", [
    ("missing", "does not exist"), ("read-only", "not writable"), ("under a file", "not a directory"),
    ("a directory", "is a directory")])
def test_checkpoint_train_into_a_bad_path_fails_before_training(tmp_path, where, fragment, rule):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir.ckpt").mkdir()
    path = {"missing": tmp_path / "no" / "run.ckpt",
            "read-only": os.path.join(_read_only_dir(tmp_path), "run.ckpt"),
            "under a file": tmp_path / "file" / "run.ckpt",
            "a directory": tmp_path / "dir.ckpt"}[where]
    _quadratic_loss.calls = 0
    with pytest.raises(CheckpointError, match=fragment):
        _train(rule, path)
    assert _quadratic_loss.calls == 0


def _rewrite_with_digest(path, drop=(), **changes):
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files if k not in drop and k != "sha256"}
    arrays.update(changes)
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        meta = json.dumps([name, a.dtype.str, list(a.shape)]).encode()
        raw = a.tobytes()
        h.update(len(meta).to_bytes(8, "little") + meta + len(raw).to_bytes(8, "little") + raw)
    arrays["sha256"] = np.array(h.hexdigest())
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


@pytest.mark.parametrize("rule", _RULES)
@pytest.mark.parametrize("change, fragment", [
    ({"version": np.array(1, np.int64)}, r"format version 1 \(written by reversible 0\.1.*reads "
                                         r"format versions 2 and 3 only"),
    ({"drop": ("version",)}, "records no checkpoint format version.*reads format versions 2 and 3"),
    ({"version": np.array(4, np.int64)}, "format version 4; this version of reversible reads "
                                         "format versions 2 and 3"),
    ({"version": np.array(2, np.int64), "drop": ("V", "V0", "M", "S")}, "missing"),
    ({"rule": np.array("lion")}, "unknown update rule.*'adam', 'momentum'"),
    ({"drop": ("rule",)}, "unknown update rule"),
    ({"beta_bits": np.array(99, np.int64)}, r"2\*\*-99")])
def test_checkpoint_of_another_format_version_is_refused(tmp_path, change, fragment, rule):
    path = tmp_path / "s.ckpt"
    checkpoint.save(_state(rule=rule), path)
    _rewrite_with_digest(path, **change)
    with pytest.raises(CheckpointError, match=fragment):
        checkpoint.load(path)


@pytest.mark.parametrize("rule", _RULES)
def test_checkpoint_records_its_format_version(tmp_path, rule):
    checkpoint.save(_state(rule=rule), tmp_path / "s.ckpt")
    with np.load(tmp_path / "s.ckpt", allow_pickle=False) as npz:
        assert int(npz["version"]) == checkpoint.VERSION == 3
        assert int(npz["beta_bits"]) == checkpoint.BETA_QUANTUM_BITS
        assert str(npz["rule"]) == rule


@pytest.mark.parametrize("rule", _RULES)
@pytest.mark.parametrize("damage", ["truncate-half", "truncate-last-byte", "flip-data-byte",
                                    "empty"])
def test_checkpoint_damaged_file_is_detected(tmp_path, damage, rule):
    path = tmp_path / "s.ckpt"
    state = _state(n=64, rule=rule)
    checkpoint.save(state, path)
    raw = bytearray(path.read_bytes())
    if damage == "truncate-half":
        raw = raw[:len(raw) // 2]
    elif damage == "truncate-last-byte":
        raw = raw[:-1]
    elif damage == "empty":
        raw = b""
    else:                                    # a byte inside W's data (uncompressed npz)
        at = bytes(raw).index(np.asarray(state.W, np.int64).tobytes()[:16]) + 3
        raw[at] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="truncated|corrupt|integrity|not a"):
        checkpoint.load(path)


# Omniglot archives ------------------------------------------------------------------------

def _png(mask, mode="1"):
    buf = io.BytesIO()
    if mode == "1":
        Image.fromarray(~mask).convert("1").save(buf, format="PNG")
    elif mode == "RGBA-transparent":         # black strokes on a fully transparent sheet
        rgba = np.zeros(mask.shape + (4,), np.uint8)
        rgba[mask] = (0, 0, 0, 255)
        Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    elif mode == "RGBA-opaque":              # black on opaque white
        rgba = np.full(mask.shape + (4,), 255, np.uint8)
        rgba[mask, :3] = 0
        Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    elif mode == "I;16":                     # 16-bit grey: white 65535, ink 0
        Image.fromarray(np.where(mask, 0, 65535).astype(np.uint16)).save(buf, format="PNG")
    elif mode == "LA":
        la = np.zeros(mask.shape + (2,), np.uint8)
        la[mask] = (0, 255)
        Image.fromarray(la, "LA").save(buf, format="PNG")
    return buf.getvalue()


_MASK = np.zeros((10, 10), bool)
_MASK[2:7, 3:5] = True
_MASK[5, 1:9] = True


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, payload in members:
            zf.writestr(name, payload)
    return path


_GOOD = [("small1/Greek/character01/a.png", _png(_MASK)),
         ("small1/Greek/character02/b.png", _png(~_MASK))]


@pytest.mark.parametrize("evil", [
    "small1/../Evil/character01/x.png",          # adds an alphabet via ..
    "../small1/Greek/character01/a.png",         # climbs out, then replaces an image
    "/small1/Greek/character01/a.png",           # absolute
    "small1\\Greek\\character01\\a.png",         # backslashes
    "small1/Greek/./character01/a.png",          # dot part
    "small1/Greek/character01/deeper/a.png",     # another layout
    "small1/Greek/character01/a.png",            # duplicate: would replace the first copy
    "other/Greek/character01/c.png",             # a second top folder
    "small1/Greek/character01/notes.txt",        # not an image of the layout
])
def test_omniglot_member_escaping_the_layout_is_refused(tmp_path, evil):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # zipfile warns about the duplicate name
        z = _zip(tmp_path / "evil.zip", _GOOD + [(evil, _png(np.ones((10, 10), bool)))])
        with pytest.raises(ValueError, match="evil.zip") as info:
            D.load_omniglot(z, size=10)
    assert repr(evil) in str(info.value) or "top folders" in str(info.value)


def test_omniglot_second_archive_cannot_replace_an_image(tmp_path):
    good = _zip(tmp_path / "a.zip", _GOOD)
    evil = _zip(tmp_path / "b.zip", [("small2/x/../../small1/Greek/character01/a.png",
                                      _png(np.ones((10, 10), bool)))])
    with pytest.raises(ValueError, match="escapes"):
        D.load_omniglot([good, evil], size=10)
    assert np.array_equal(D.load_omniglot(good, size=10).X[0], _MASK.ravel())   # nothing lost


@pytest.mark.parametrize("mode", ["RGBA-transparent", "RGBA-opaque", "I;16", "LA"])
def test_omniglot_png_of_any_mode_reads_as_its_strokes(tmp_path, mode):
    z = _zip(tmp_path / "a.zip", [("top/A/character01/a.png", _png(_MASK, mode))])
    got = D.load_omniglot(z, size=10).X[0]
    assert np.array_equal(got, _MASK.ravel().astype(float))


def test_omniglot_16bit_grey_levels_are_kept(tmp_path):
    grey = np.full((4, 4), 65535, np.uint16)
    grey[0, 0], grey[0, 1] = 0, 16384
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, format="PNG")
    z = _zip(tmp_path / "a.zip", [("top/A/character01/a.png", buf.getvalue())])
    got = D.load_omniglot(z, size=4).X[0]
    np.testing.assert_allclose(got[:3], [1.0, 1 - 16384 / 65535, 0.0], rtol=0, atol=1e-7)


def test_omniglot_non_png_payload_is_refused(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(buf, format="JPEG")
    z = _zip(tmp_path / "a.zip", [("top/A/character01/a.png", buf.getvalue())])
    with pytest.raises(ValueError, match="a.png.*not a PNG"):
        D.load_omniglot(z, size=4)


# IDX files --------------------------------------------------------------------------------

def _idx_header(magic_type, dims):
    return struct.pack(">BBBB", 0, 0, magic_type, len(dims)) + b"".join(
        struct.pack(">I", d) for d in dims)


def test_idx_gzip_bomb_is_rejected_without_decompressing_it(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    zeros = bytes(1 << 20)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6) as comp:
        comp.write(_idx_header(0x08, (10, 28, 28)))
        for _ in range(64):                      # 64 MB of zeros behind a 7.8 kB promise
            comp.write(zeros)
    assert path.stat().st_size < 200_000
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        with pytest.raises(ValueError, match="trailing data"):
            D.read_idx(path, expect_magic=2051)
        elapsed = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000 and elapsed < 2.0, (peak, elapsed)


def test_idx_header_promising_gigabytes_is_rejected_before_reading(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(_idx_header(0x08, (3_000_000, 28, 28)) + bytes(1000)))
    with pytest.raises(ValueError, match="promises .* more than max_bytes"):
        D.read_idx(path, expect_magic=2051)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_dimensions_overflowing_int64_are_rejected(tmp_path, gz):
    dims = (2**32 - 1, 2**32 - 1, 2**32 - 1)     # product wraps int64 in numpy
    raw = _idx_header(0x0E, dims) + bytes(64)
    path = tmp_path / ("x.idx.gz" if gz else "x.idx")
    path.write_bytes(gzip.compress(raw) if gz else raw)
    with pytest.raises(ValueError, match=r"promises dimensions \(4294967295, 4294967295"):
        D.read_idx(path)


def test_idx_raw_file_size_is_checked_before_reading(tmp_path):
    path = tmp_path / "x.idx"
    path.write_bytes(_idx_header(0x08, (1000, 1000)) + bytes(10))
    with pytest.raises(ValueError, match="need 1000012 bytes but the file has 22 .truncated"):
        D.read_idx(path)


# sweeps -----------------------------------------------------------------------------------

_CALLS = []


def _point_fn(point):
    _CALLS.append(point["x"])
    if point["x"] == 13:
        raise ArithmeticError("unlucky point")
    return {"y": point["x"] * 10, "curve": np.arange(3.0) * point["x"]}


def _finished_sweep(tmp_path, n=4):
    points = [{"x": i} for i in range(n)]
    reference = sweep(_point_fn, points, tmp_path, scheduler="serial", progress=False)
    _CALLS.clear()
    return points, reference


def _equal_results(a, b):
    return len(a) == len(b) and all(
        ra.keys() == rb.keys() and all(np.array_equal(ra[k], rb[k]) for k in ra)
        for ra, rb in zip(a, b))


@pytest.mark.parametrize("damage", ["delete-npz", "truncate-npz", "truncate-json", "alter-npz",
                                    "delete-json-keep-npz"])
def test_sweep_damaged_point_is_recomputed_loudly_and_refused_by_load(tmp_path, damage):
    points, reference = _finished_sweep(tmp_path)
    js, npz = point_path(tmp_path, 2), point_path(tmp_path, 2).with_suffix(".npz")
    if damage == "delete-npz":
        npz.unlink()
    elif damage == "truncate-npz":
        npz.write_bytes(npz.read_bytes()[:40])
    elif damage == "truncate-json":
        js.write_text(js.read_text()[:25])
    elif damage == "alter-npz":
        raw = bytearray(npz.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        npz.write_bytes(bytes(raw))
    else:
        js.unlink()
    if damage != "delete-json-keep-npz":
        with pytest.raises(SweepError, match=r"sweep point 2\b.*point-000002.*rerun the sweep"):
            load_points(tmp_path)
        with pytest.warns(SweepWarning, match=r"sweep point 2\b.*point-000002.*recomputing"):
            again = sweep(_point_fn, points, tmp_path, scheduler="serial", progress=False)
    else:                                       # an unfinished point: recomputed silently
        again = sweep(_point_fn, points, tmp_path, scheduler="serial", progress=False)
    assert _CALLS == [2]
    assert _equal_results(again, reference)
    assert _equal_results([r for _, (_, r) in sorted(load_points(tmp_path).items())], reference)


def test_sweep_truncated_manifest_names_the_file_and_the_fix(tmp_path):
    points, reference = _finished_sweep(tmp_path)
    manifest = tmp_path / "sweep.json"
    manifest.write_text(manifest.read_text()[:17])
    with pytest.raises(SweepError, match=f"manifest {manifest} is damaged.*delete it"):
        sweep(_point_fn, points, tmp_path, scheduler="serial", progress=False)
    manifest.unlink()                           # the documented fix keeps every finished point
    again = sweep(_point_fn, points, tmp_path, scheduler="serial", progress=False)
    assert _CALLS == [] and _equal_results(again, reference)


def test_sweep_point_that_raises_is_named_and_finished_points_are_kept(tmp_path):
    points = [{"x": 11}, {"x": 12}, {"x": 13}, {"x": 14}]
    _CALLS.clear()
    with pytest.raises(SweepError, match=r"sweep point 2 \{'x': 13\} failed: ArithmeticError: "
                                         "unlucky point") as info:
        sweep(_point_fn, points, tmp_path, scheduler="serial", progress=False)
    assert isinstance(info.value.__cause__, ArithmeticError)
    assert sorted(load_points(tmp_path)) == [0, 1]
    assert _leftovers(tmp_path) == []            # no temporary files from the atomic writes


# optimize ---------------------------------------------------------------------------------

def _objective(h, i):
    import autograd.numpy as anp
    return anp.sum((h - 3.0) ** 2)


@pytest.mark.parametrize("option, error", [
    ({"b2": -1}, ValueError), ({"b2": 1.0}, ValueError), ({"b1": 1.5}, ValueError),
    ({"b1": float("nan")}, ValueError), ({"eps": 0.0}, ValueError), ({"eps": -1.0}, ValueError),
    ({"lr": float("nan")}, ValueError), ({"lr": 0}, ValueError), ({"clip": -1.0}, ValueError),
    ({"clip": float("inf")}, ValueError), ({"steps": 2.5}, TypeError),
    ({"optimizer": "rmsprop"}, ValueError)])
def test_optimize_invalid_option_is_refused_before_any_evaluation(option, error):
    evaluated = []

    def objective(h, i):
        evaluated.append(i)
        return _objective(h, i)

    kwargs = {"steps": 3, **option}
    steps = kwargs.pop("steps")
    name = next(iter(option))
    with pytest.raises(error, match=name):
        reversible.optimize(objective, np.zeros(1), steps, progress=False, **kwargs)
    assert evaluated == []


# --- PyTorch front end (torch) ---

def _torch_or_skip():
    torch = pytest.importorskip("torch")
    rt = pytest.importorskip("reversible.torch")
    return torch, rt


def test_torch_fault_dataset_mutated_between_forward_and_reverse():
    """A training set edited after training (an in-place augmentation) fails the reversal."""
    torch, rt = _torch_or_skip()
    from reversible import ReversibilityError
    data = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(4, 3)

    def loss(w, meta, t):
        return ((data[t % 4] - w) ** 2).sum()

    alphas = torch.full((8,), 0.2, dtype=torch.float64, requires_grad=True)
    wT = rt.sgd(loss, torch.zeros(3, dtype=torch.float64), alphas, torch.full((8,), 0.7))
    data.mul_(1.0 + 1e-9)                                   # the fault
    with pytest.raises(ReversibilityError, match="(did not return|diverged).*from the step index t"):
        torch.autograd.grad(wT.sum(), alphas)


def test_torch_fault_nan_hessian_vector_product_named_with_step():
    """A loss whose gradient is finite but whose curvature is not at one step."""
    torch, rt = _torch_or_skip()
    from reversible import NonFiniteError

    class Kink(torch.autograd.Function):       # gradient finite, its derivative NaN at step 2
        @staticmethod
        def forward(ctx, x, t):
            ctx.save_for_backward(x)
            ctx.t = t
            return (x ** 2).sum()

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * 2 * x * _Nan.apply(x, ctx.t), None

    class _Nan(torch.autograd.Function):       # identity 1, derivative NaN at step 2
        @staticmethod
        def forward(ctx, x, t):
            ctx.t = t
            return torch.ones_like(x)

        @staticmethod
        def backward(ctx, g):
            return g * (float("nan") if ctx.t == 2 else 0.0), None

    def loss(w, meta, t):
        return Kink.apply(w, t)

    alphas = torch.full((4,), 0.1, dtype=torch.float64, requires_grad=True)
    wT = rt.sgd(loss, torch.ones(3, dtype=torch.float64), alphas, torch.full((4,), 0.5),
                hvp="double")
    with pytest.raises(NonFiniteError, match="Hessian-vector product at step 2"):
        torch.autograd.grad(wT.sum(), alphas)


def test_torch_fault_nan_cotangent_of_the_result():
    torch, rt = _torch_or_skip()
    from reversible import NonFiniteError
    alphas = torch.full((3,), 0.1, dtype=torch.float64, requires_grad=True)
    wT = rt.sgd(lambda w, m, t: (w ** 2).sum(), torch.ones(2, dtype=torch.float64), alphas,
                torch.full((3,), 0.5))
    with pytest.raises(NonFiniteError, match="cotangent of w_T"):
        torch.autograd.grad(wT, alphas, torch.tensor([float("nan"), 1.0], dtype=torch.float64))


def test_torch_fault_second_backward_gives_the_same_hypergradient():
    """The forward state is kept: a retained graph can be reversed twice, bit for bit alike."""
    torch, rt = _torch_or_skip()
    alphas = torch.full((5,), 0.1, dtype=torch.float64, requires_grad=True)
    wT = rt.sgd(lambda w, m, t: ((w - t) ** 2).sum(), torch.ones(2, dtype=torch.float64), alphas,
                torch.full((5,), 0.6))
    first = torch.autograd.grad(wT.sum(), alphas, retain_graph=True)[0]
    second = torch.autograd.grad(wT.sum(), alphas)[0]
    assert torch.equal(first, second)
    assert float(first.abs().min()) > 0


def test_torch_fault_loss_raising_midway_propagates_unchanged():
    torch, rt = _torch_or_skip()

    def loss(w, meta, t):
        if t == 3:
            raise KeyError("batch 3 missing")
        return (w ** 2).sum()

    with pytest.raises(KeyError, match="batch 3 missing"):
        rt.sgd(loss, torch.ones(2, dtype=torch.float64), torch.full((5,), 0.1), torch.full((5,), 0.5))

# --- CLI (layout) ---
#
# every bad command-line value (negative, zero, non-numeric, non-finite, out of range, unknown
#   method, malformed method option, unknown subcommand or data set, missing argument):
#   argparse usage error, exit status 2, naming the option and what it accepts; no traceback;
# an --out that is a file or lies below one: usage error before any work;
# a failing download (offline): one line naming the data set and the cause, exit status 1.

import subprocess as _cli_subprocess  # noqa: E402
import sys as _cli_sys  # noqa: E402
from pathlib import Path as _CliPath  # noqa: E402

from reversible import cli as _cli  # noqa: E402

_CLI_REPO = _CliPath(__file__).resolve().parents[1]

#: (argv, text that must appear in the usage error): each is one injected fault
CLI_FAULTS = [
    (["demo", "--T", "-5"], "argument --T: must be a positive integer"),
    (["demo", "--T", "0"], "argument --T: must be a positive integer"),
    (["demo", "--T", "ten"], "argument --T: must be a positive integer"),
    (["demo", "--T", "1e3"], "argument --T: must be a positive integer"),
    (["demo", "--layers", "64,abc"], "argument --layers: must be comma-separated positive integers"),
    (["demo", "--layers", ""], "argument --layers: must be comma-separated positive integers"),
    (["demo", "--layers", "64,-3,10"], "argument --layers: must be comma-separated positive integers"),
    (["demo", "--layers", "64"], "argument --layers: must start with 64"),
    (["demo", "--layers", "64,32,9"], "argument --layers: must start with 64 (pixels of a digit) and end with 10"),
    (["demo", "--batch", "-1"], "argument --batch: must be a positive integer"),
    (["demo", "--batch", "1001"], "argument --batch: must be at most 1000"),
    (["demo", "--meta-steps", "-2"], "argument --meta-steps: must be a positive integer"),
    (["demo", "--meta-lr", "0"], "argument --meta-lr: must be a finite number > 0"),
    (["demo", "--meta-lr", "inf"], "argument --meta-lr: must be a finite number > 0"),
    (["demo", "--meta-lr", "nan"], "argument --meta-lr: must be a finite number > 0"),
    (["demo", "--meta-lr", "fast"], "argument --meta-lr: must be a positive number"),
    (["demo", "--seed", "-7"], "argument --seed: must be an integer >= 0"),
    (["demo", "--seed", "x"], "argument --seed: must be an integer >= 0"),
    (["compare", "--methods", "bogus"], "argument --methods: unknown method 'bogus'; valid methods:"),
    (["compare", "--methods", "exact", "truncated:K"], "argument --methods: bad method option 'K'"),
    (["compare", "--reference", "bogus"], "argument --reference: unknown method 'bogus'"),
    (["compare", "--T", "-5"], "argument --T: must be a positive integer"),
    (["compare", "--T"], "argument --T: expected at least one argument"),
    (["compare", "--hidden", "0"], "argument --hidden: must be a positive integer"),
    (["compare", "--n-train", "0"], "argument --n-train: must be a positive integer"),
    (["compare", "--n-train", "5000"], "argument --n-train: must leave validation examples"),
    (["compare", "--batch-size", "2000"], "argument --batch-size: must be at most --n-train"),
    (["compare", "--jobs", "-1"], "argument --jobs: must be a positive integer"),
    (["compare", "--seed", "-1"], "argument --seed: must be an integer >= 0"),
    (["download"], "the following arguments are required: name"),
    (["download", "imagenet"], "argument name: invalid choice: 'imagenet'"),
    (["frobnicate"], "argument COMMAND: invalid choice: 'frobnicate'"),
]


@pytest.mark.parametrize("argv, message", CLI_FAULTS, ids=[" ".join(a) for a, _ in CLI_FAULTS])
def test_cli_bad_argument_is_a_usage_error(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        _cli.main(argv)
    err = " ".join(capsys.readouterr().err.split())
    assert e.value.code == 2
    assert message in err, err
    assert err.startswith("usage: reversible")


@pytest.mark.parametrize("command", ["demo", "compare"])
def test_cli_unusable_output_directory_fails_before_any_work(command, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    for out in (blocker, blocker / "below-a-file"):
        with pytest.raises(SystemExit) as e:
            _cli.main([command, "--out", str(out)])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "argument --out:" in err and str(out) in err


def test_cli_download_failure_is_one_clear_line(tmp_path, capsys):
    dead = (tmp_path / "no-such-mirror").as_uri() + "/"
    target = tmp_path / "mnist"
    assert _cli.main(["download", "mnist", "--dir", str(target), "--mirror", dead]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("reversible download mnist: DownloadError: ") and "\n" not in err
    assert not [p for p in target.rglob("*") if p.is_file()]        # nothing half-written left


def test_cli_usage_error_exit_status_from_a_real_process():
    for argv in (["demo", "--T", "-5"], ["demo", "--layers", "64,abc"], ["compare", "--methods", "bogus"]):
        proc = _cli_subprocess.run([_cli_sys.executable, "-m", "reversible.cli", *argv], cwd=_CLI_REPO,
                                   capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, argv
        assert "Traceback" not in proc.stderr and "error: argument" in proc.stderr
