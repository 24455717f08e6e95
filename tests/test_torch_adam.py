"""reversible.torch.adam: exact hypergradients of Adam / AdamW training runs of PyTorch models."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
rt = pytest.importorskip("reversible.torch")

F64 = torch.float64
torch.set_num_threads(1)     # tiny models on a shared 2-core machine: one thread is fastest


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    return torch.tensor(X[:200] / 16.0, dtype=F64), torch.tensor(y[:200])


def mlp_problem(digits, dtype=F64):
    X, y = digits
    X = X.to(dtype)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 10), torch.nn.Tanh(),
                                torch.nn.Linear(10, 10)).to(dtype)

    def train_loss(params, meta, t):
        i = (torch.arange(20) + 20 * t) % 150
        out = torch.func.functional_call(model, params, (X[i],))
        return torch.nn.functional.cross_entropy(out, y[i]) + torch.exp(meta[0]).to(dtype) * sum(
            (p ** 2).sum() for p in params.values())

    def val_loss(params):
        return torch.nn.functional.cross_entropy(
            torch.func.functional_call(model, params, (X[150:],)), y[150:])

    params0 = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
    return train_loss, val_loss, params0


def hypers(G, T):
    g = torch.Generator().manual_seed(5)
    return dict(
        log_alpha=(np.log(0.01) + 0.1 * torch.randn(T, G, generator=g, dtype=F64)).requires_grad_(),
        logit_b1=torch.full((T,), 2.0, dtype=F64, requires_grad=True),
        logit_b2=torch.full((T, G), 5.0, dtype=F64, requires_grad=True),
        # eps = 3e-4; with eps near 1e-6 weights that see almost no gradient (blank pixels) make
        # exact and float64 Adam differ by ~1e-6 through the fixed-point format of s
        log_eps=torch.full((G,), -8.0, dtype=F64, requires_grad=True),
        weight_decay=torch.full((T, G), 0.02, dtype=F64, requires_grad=True),
        meta=torch.tensor([-6.0], dtype=F64, requires_grad=True))


def hypergradients(train_loss, val_loss, params0, h, method, **kw):
    pT = rt.adam(train_loss, params0, h["log_alpha"].exp(), torch.sigmoid(h["logit_b1"]),
                 torch.sigmoid(h["logit_b2"]), h["meta"], eps=h["log_eps"].exp(),
                 weight_decay=h["weight_decay"], method=method, **kw)
    leaves = list(params0.values()) + list(h.values())
    return torch.autograd.grad(val_loss(pT), leaves)


def rel(a, b):
    a, b = torch.cat([x.reshape(-1) for x in a]), torch.cat([x.reshape(-1) for x in b])
    return float((a - b).norm() / b.norm())


def test_exact_adam_matches_unrolled_for_every_hyperparameter_kind(digits):
    train_loss, val_loss, params0 = mlp_problem(digits)
    h = hypers(len(params0), T=10)
    stats = {}
    g_exact = hypergradients(train_loss, val_loss, params0, h, "exact", stats=stats)
    g_unrolled = hypergradients(train_loss, val_loss, params0, h, "unrolled")
    assert stats["reversed_exactly"] is True and stats["rule"] == "adam"
    names = list(params0) + list(h)
    for name, a, b in zip(names, g_exact, g_unrolled):
        assert float(b.norm()) > 0, name
        assert rel([a], [b]) < 1e-7, name      # measured 2e-11 .. 8e-9


def test_float_methods_on_the_torch_adam_problem(digits):
    train_loss, val_loss, params0 = mlp_problem(digits)
    T = 6
    h = hypers(len(params0), T)
    ref = hypergradients(train_loss, val_loss, params0, h, "unrolled")
    assert rel(hypergradients(train_loss, val_loss, params0, h, "checkpointed"), ref) < 1e-11
    assert rel(hypergradients(train_loss, val_loss, params0, h, "truncated", K=T), ref) < 1e-11
    drmad = hypergradients(train_loss, val_loss, params0, h, "drmad")
    assert all(bool(torch.isfinite(g).all()) for g in drmad)


def test_torch_adam_matches_the_autograd_front_end():
    import autograd
    import autograd.numpy as anp
    import reversible
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 5)), rng.normal(size=40)
    Xt, yt = torch.tensor(X), torch.tensor(y)

    def loss_np(w, meta, t):
        i = (np.arange(10) + 10 * t) % 40
        return anp.mean((anp.tanh(X[i] @ w) - y[i]) ** 2) + anp.exp(meta[0]) * anp.sum(w ** 2)

    def loss_t(w, meta, t):
        i = (torch.arange(10) + 10 * t) % 40
        return ((torch.tanh(Xt[i] @ w) - yt[i]) ** 2).mean() + torch.exp(meta[0]) * (w ** 2).sum()

    T, w0 = 8, rng.normal(size=5)
    vals = (np.full(T, 0.05), np.full(T, 0.9), np.full(T, 0.995), np.array([-2.0]))
    ref = autograd.grad(lambda a, b1, b2, m: anp.sum(reversible.adam(
        loss_np, w0, a, b1, b2, m, weight_decay=0.1) ** 2), (0, 1, 2, 3))(*vals)
    ts = [torch.tensor(v, requires_grad=True) for v in vals]
    wT = rt.adam(loss_t, torch.tensor(w0), *ts, weight_decay=0.1)
    got = torch.autograd.grad((wT ** 2).sum(), ts)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-10, atol=1e-15)


def test_float32_adam_reverses_exactly(digits):
    train_loss, val_loss, params0 = mlp_problem(digits, torch.float32)
    h = hypers(len(params0), T=5)
    stats = {}
    g32 = hypergradients(train_loss, val_loss, params0, h, "exact", stats=stats)
    g32u = hypergradients(train_loss, val_loss, params0, h, "unrolled")
    assert stats["reversed_exactly"] is True
    assert rel(g32[len(params0):], g32u[len(params0):]) < 1e-5


W0 = torch.ones(3, dtype=F64)
AL, B1, B2 = torch.full((4,), 0.1, dtype=F64), torch.full((4,), 0.9, dtype=F64), \
    torch.full((4,), 0.99, dtype=F64)


def _loss(w, meta, t):
    return ((w - 0.1 * t) ** 2).sum()


@pytest.mark.parametrize("call, err, match", [
    (lambda: rt.adam(_loss, W0, AL, B1, B2, method="forward"), ValueError, "does not support Adam"),
    (lambda: rt.adam(_loss, W0, AL, B1, B2, method="cg"), ValueError, "does not support Adam"),
    (lambda: rt.adam(_loss, W0, AL, B1, B2, eps=-1.0), ValueError, r"eps must lie in \(0, inf\)"),
    (lambda: rt.adam(_loss, W0, AL, B1, B2, eps=torch.ones(2)), ValueError, "one value per group"),
    (lambda: rt.adam(_loss, W0, AL, B1, B2, weight_decay=torch.ones(3, 1)), ValueError,
     "weight_decay must be a scalar"),
    (lambda: rt.adam(_loss, W0, AL, B1, B2 + 0.5), ValueError, r"beta2s must lie in \(0, 1\]"),
    (lambda: rt.adam(_loss, W0, AL, B1[:3], B2), ValueError, "alphas has 4 steps but beta1s has 3"),
    (lambda: rt.adam(_loss, W0, AL, B1, B2, K=3), ValueError, "does not take option"),
])
def test_bad_adam_input_is_a_clear_error(call, err, match):
    with pytest.raises(err, match=match):
        call()


# ---------------------------------------------------------------- CUDA path, emulated on the CPU
@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_cuda_path_on_emulated_kernels_is_the_cpu_engine_bit_for_bit(digits, emu, dtype):
    """rt.adam's CUDA code path (reversible.gpu.adam, DLPack exchange, the engine's error flags
    read every check_every steps) run on the emulated kernels: the same params_T and the same
    hypergradient of every kind as the CPU engine, bit for bit."""
    train_loss, val_loss, params0 = mlp_problem(digits, dtype)
    h = hypers(len(params0), T=5)
    stats = {}
    out = {}
    for name, kw in [("cpu", {}), ("emulated", {"gpu_backend": emu, "stats": stats,
                                                 "check_every": 2})]:
        pT = rt.adam(train_loss, params0, h["log_alpha"].exp(), torch.sigmoid(h["logit_b1"]),
                     torch.sigmoid(h["logit_b2"]), h["meta"], eps=h["log_eps"].exp(),
                     weight_decay=h["weight_decay"], **kw)
        out[name] = (pT, torch.autograd.grad(val_loss(pT), list(params0.values()) + list(h.values())))
    assert stats["reversed_exactly"] is True and stats["rule"] == "adam"
    assert stats["device"] == "cuda" and stats["tail_capacity_words"] > 0      # the GPU path ran
    assert all(torch.equal(out["cpu"][0][k], out["emulated"][0][k]) for k in params0)
    assert all(out["cpu"][0][k].dtype == dtype for k in params0)
    for a, b in zip(out["emulated"][1], out["cpu"][1]):
        assert torch.equal(a, b)


def test_cuda_path_refuses_cpu_only_methods_and_names_nondeterminism(emu):
    with pytest.raises(ValueError, match="runs on CPU tensors only"):
        rt.adam(_loss, W0, AL, B1, B2, method="checkpointed", gpu_backend=emu)
    calls = {"n": 0}

    def drifting(w, meta, t):
        calls["n"] += 1
        return ((w - (0.0 if calls["n"] < 8 else 1e-3)) ** 2).sum()

    alphas = AL.clone().requires_grad_()
    wT = rt.adam(drifting, torch.ones(3, dtype=F64), alphas, B1, B2, gpu_backend=emu)
    from reversible import ReversibilityError
    with pytest.raises(ReversibilityError, match="did not return to the starting point.*"
                                                 "torch.use_deterministic_algorithms"):
        torch.autograd.grad(wT.sum(), alphas)
