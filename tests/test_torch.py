"""reversible.torch: exact hypergradients of PyTorch training runs (CPU)."""

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
rt = pytest.importorskip("reversible.torch")

from reversible import ReversibilityError, NonFiniteError, FixedPointOverflowError  # noqa: E402
from reversible.buffer import BETA_ONE, quantize_beta  # noqa: E402

F64 = torch.float64
torch.set_num_threads(1)     # tiny models on a shared 2-core machine: one thread is fastest


# ---------------------------------------------------------------- problems
@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X[:240] / 16.0, dtype=F64)
    return X, torch.tensor(y[:240])


def mlp(dtype=F64):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 12), torch.nn.Tanh(),
                               torch.nn.Linear(12, 10)).to(dtype)


def convnet(dtype=F64):
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.Tanh(), torch.nn.Flatten(),
                               torch.nn.Linear(3 * 6 * 6, 10)).to(dtype)


def losses(model, digits, batch=20, image=False):
    """``(train_loss, val_loss)``: cross-entropy on step t's batch + per-group L2 exp(meta[g])."""
    X, y = digits
    X = X.reshape(-1, 1, 8, 8) if image else X
    dtype = next(model.parameters()).dtype
    Xtr, ytr, Xva, yva = X[:160].to(dtype), y[:160], X[160:].to(dtype), y[160:]

    def train_loss(params, meta, t):
        i = (torch.arange(batch) + batch * t) % Xtr.shape[0]
        out = torch.func.functional_call(model, params, (Xtr[i],))
        loss = torch.nn.functional.cross_entropy(out, ytr[i])
        if meta is not None:
            loss = loss + sum(torch.exp(meta[g].to(dtype)) * (p ** 2).sum()
                              for g, p in enumerate(params.values()))
        return loss

    def val_loss(params):
        out = torch.func.functional_call(model, params, (Xva,))
        return torch.nn.functional.cross_entropy(out, yva)

    return train_loss, val_loss


def hypers(model, T, per_group=True, seed=3):
    """Leaf tensors (requires_grad) for params0, v0, log-alphas, logit-betas and meta."""
    g = torch.Generator().manual_seed(seed)
    dtype = next(model.parameters()).dtype
    params0 = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
    v0 = {k: (0.01 * torch.randn(v.shape, generator=g, dtype=F64)).to(dtype).requires_grad_()
          for k, v in params0.items()}
    G = len(params0) if per_group else 1
    shape = (T, G) if per_group else (T,)
    log_alpha = (np.log(0.3) + 0.1 * torch.randn(shape, generator=g, dtype=F64)).requires_grad_()
    logit_beta = (2.0 + 0.2 * torch.randn(shape, generator=g, dtype=F64)).requires_grad_()
    meta = torch.full((len(params0),), -6.0, dtype=F64, requires_grad=True)
    return params0, v0, log_alpha, logit_beta, meta


def run(train_loss, val_loss, h, method="exact", **kw):
    params0, v0, log_alpha, logit_beta, meta = h
    pT = rt.sgd(train_loss, params0, log_alpha.exp(), torch.sigmoid(logit_beta), meta, v0=v0,
                method=method, **kw)
    L = val_loss(pT)
    leaves = list(params0.values()) + list(v0.values()) + [log_alpha, logit_beta, meta]
    return L, torch.autograd.grad(L, leaves)


def rel(a, b):
    a, b = torch.cat([x.reshape(-1) for x in a]), torch.cat([x.reshape(-1) for x in b])
    return float((a - b).norm() / b.norm())


def per_kind(grads, G):
    """Group the flat gradient list into params0, v0, alphas, betas, meta."""
    return {"params0": grads[:G], "v0": grads[G:2 * G], "alphas": [grads[2 * G]],
            "betas": [grads[2 * G + 1]], "meta": [grads[2 * G + 2]]}


# ---------------------------------------------------------------- agreement
@pytest.mark.parametrize("net", ["mlp", "conv"])
def test_exact_matches_unrolled_for_every_hyperparameter_kind(digits, net):
    model = mlp() if net == "mlp" else convnet()
    train_loss, val_loss = losses(model, digits, image=(net == "conv"))
    h = hypers(model, T=12)
    stats = {}
    L_e, g_e = run(train_loss, val_loss, h, "exact", stats=stats)
    L_u, g_u = run(train_loss, val_loss, h, "unrolled")
    assert stats["reversed_exactly"] is True
    assert abs(float(L_e.detach() - L_u.detach())) < 1e-13 * abs(float(L_u.detach()))
    G = len(h[0])
    ke, ku = per_kind(g_e, G), per_kind(g_u, G)
    for kind in ke:
        assert rel(ke[kind], ku[kind]) < 1e-11, kind      # measured ~1e-14 (engine v2)
        assert float(torch.cat([x.reshape(-1) for x in ku[kind]]).norm()) > 0, kind


def _quantum_step(target):
    """A step that is a whole number of momentum quanta (so finite differences along beta are smooth)."""
    return max(1, round(target * BETA_ONE)) / BETA_ONE


@pytest.mark.parametrize("net", ["mlp", "conv"])
def test_exact_matches_central_finite_differences(digits, net):
    """Directional central differences of the exact forward map along each hyperparameter kind."""
    model = mlp() if net == "mlp" else convnet()
    train_loss, val_loss = losses(model, digits, image=(net == "conv"))
    T = 8
    params0, v0, log_alpha, logit_beta, meta = hypers(model, T)
    alphas = log_alpha.detach().exp().requires_grad_()
    betas = torch.tensor(quantize_beta(torch.sigmoid(logit_beta).detach().numpy()) / BETA_ONE,
                         requires_grad=True)
    base = dict(params0=params0, v0=v0, alphas=alphas, betas=betas, meta=meta)

    def objective(vals):
        pT = rt.sgd(train_loss, vals["params0"], vals["alphas"], vals["betas"], vals["meta"],
                    v0=vals["v0"])
        return val_loss(pT)

    L = objective(base)
    flat_inputs = {k: (list(v.values()) if isinstance(v, dict) else [v]) for k, v in base.items()}
    grads = torch.autograd.grad(L, [x for xs in flat_inputs.values() for x in xs])
    g = torch.Generator().manual_seed(7)
    pos = 0
    for kind, xs in flat_inputs.items():
        gk = grads[pos:pos + len(xs)]
        pos += len(xs)
        dirs = [torch.randn(x.shape, generator=g, dtype=F64).to(x.dtype) for x in xs]
        # steps big enough that the fixed point's rounding (~1e-11 absolute) is far below the signal
        eps = {"betas": _quantum_step(1e-4), "meta": 1e-2}.get(kind, 1e-4)
        if kind == "betas":   # whole quanta per entry, and stay inside (0, 1]
            dirs = [torch.sign(d) for d in dirs]

        def shifted(s):
            vals = dict(base)
            moved = [(x + s * eps * d).detach() for x, d in zip(xs, dirs)]
            vals[kind] = dict(zip(base[kind].keys(), moved)) if isinstance(base[kind], dict) \
                else moved[0]
            return float(objective(vals))

        with torch.no_grad():
            fd = (shifted(1) - shifted(-1)) / (2 * eps)
        analytic = float(sum((gi * d).sum() for gi, d in zip(gk, dirs)))
        assert abs(fd - analytic) <= 1e-4 * abs(analytic), (kind, fd, analytic)


def test_hvp_modes_agree_and_reverse_over_reverse_matches(digits):
    model = mlp()
    train_loss, val_loss = losses(model, digits)
    h = hypers(model, T=8)          # "auto" tries each mode on two reverse steps, then keeps one
    _, g_f = run(train_loss, val_loss, h, hvp="forward")
    _, g_r = run(train_loss, val_loss, h, hvp="reverse")
    _, g_d = run(train_loss, val_loss, h, hvp="double")
    stats = {}
    _, g_a = run(train_loss, val_loss, h, hvp="auto", stats=stats)
    assert rel(g_f, g_r) < 1e-12 and rel(g_d, g_r) < 1e-12
    assert stats["hvp"] in ("forward", "reverse", "double")
    assert sorted(stats["hvp_seconds_by_mode"]) == ["double", "forward", "reverse"]
    assert rel(g_a, g_f) < 1e-12


def test_op_without_forward_rule_is_skipped_by_auto(digits):
    class Square(torch.autograd.Function):          # no jvp: forward mode cannot go through it
        @staticmethod
        def forward(x):
            return x * x

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[0])

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 2 * x * g

    X, y = digits
    Xf = X[:40]

    def train_loss(w, meta, t):
        return Square.apply(Xf[t * 10 % 40:(t * 10 % 40) + 10] @ w).mean()

    w0 = (0.01 * torch.arange(64, dtype=F64)).requires_grad_()
    alphas = torch.full((5,), 0.1, dtype=F64, requires_grad=True)
    stats = {}
    wT = rt.sgd(train_loss, w0, alphas, torch.full((5,), 0.9, dtype=F64), stats=stats)
    ga = torch.autograd.grad(wT.sum(), alphas)[0]
    wT_u = rt.sgd(train_loss, w0, alphas, torch.full((5,), 0.9, dtype=F64), method="unrolled")
    gu = torch.autograd.grad(wT_u.sum(), alphas)[0]
    assert stats["hvp"] in ("reverse", "double") and "forward" in stats["hvp_failed_modes"]
    assert float((ga - gu).norm() / gu.norm()) < 1e-9
    with pytest.raises(NotImplementedError):
        wT = rt.sgd(train_loss, w0, alphas, torch.full((5,), 0.9, dtype=F64), hvp="forward")
        torch.autograd.grad(wT.sum(), alphas)


# ---------------------------------------------------------------- containers, dtypes
def _quadratic(center):
    def train_loss(params, meta, t):
        leaves = params if isinstance(params, (list, tuple)) else [params["a"], params["b"]["c"]]
        return sum(((p - center * (1 + 0.1 * t)) ** 2).sum() for p in leaves)
    return train_loss


@pytest.mark.parametrize("kind", ["list", "tuple", "nested dict"])
def test_containers_keep_structure_and_give_the_same_hypergradients(kind):
    a = torch.tensor([0.5, -1.0, 2.0], dtype=F64, requires_grad=True)
    b = torch.tensor([[1.5, 0.25], [-0.5, 3.0]], dtype=F64, requires_grad=True)
    params0 = {"list": [a, b], "tuple": (a, b), "nested dict": {"a": a, "b": {"c": b}}}[kind]
    alphas = torch.full((6, 2), 0.1, dtype=F64, requires_grad=True)
    betas = torch.full((6, 2), 0.8, dtype=F64)
    pT = rt.sgd(_quadratic(0.3), params0, alphas, betas)
    assert type(pT) is type(params0)
    leaves = [pT["a"], pT["b"]["c"]] if kind == "nested dict" else list(pT)
    assert [tuple(x.shape) for x in leaves] == [(3,), (2, 2)]
    ga = torch.autograd.grad(sum((x ** 3).sum() for x in leaves), [a, b, alphas])
    ref = rt.sgd(_quadratic(0.3), [a, b], alphas, betas, method="unrolled")
    gr = torch.autograd.grad(sum((x ** 3).sum() for x in ref), [a, b, alphas])
    assert rel(ga, gr) < 1e-9


def test_single_tensor_params_and_no_hyperparameter_needing_grad_still_trains():
    w0 = torch.tensor([1.0, -2.0], dtype=F64)
    wT = rt.sgd(lambda w, m, t: (w ** 2).sum(), w0, torch.full((4,), 0.1), torch.full((4,), 0.5))
    ref = rt.sgd(lambda w, m, t: (w ** 2).sum(), w0, torch.full((4,), 0.1), torch.full((4,), 0.5),
                 method="unrolled")
    assert isinstance(wT, torch.Tensor) and not wT.requires_grad
    assert torch.allclose(wT, ref, rtol=1e-12, atol=0)


def test_float32_model_reverses_exactly_and_matches_float64(digits):
    m32, m64 = mlp(torch.float32), mlp(F64)
    tl32, vl32 = losses(m32, digits)
    tl64, vl64 = losses(m64, digits)
    h32, h64 = hypers(m32, T=8), hypers(m64, T=8)
    stats = {}
    L32, g32 = run(tl32, vl32, h32, stats=stats)
    _, g32u = run(tl32, vl32, h32, "unrolled")
    _, g64 = run(tl64, vl64, h64)
    assert stats["reversed_exactly"] is True
    pT = rt.sgd(tl32, h32[0], h32[2].exp(), torch.sigmoid(h32[3]), h32[4], v0=h32[1])
    assert all(v.dtype == torch.float32 for v in pT.values())
    assert all(g.dtype == x.dtype for g, x in zip(g32, list(h32[0].values()) + list(h32[1].values())))
    assert rel(g32, g32u) < 1e-6        # same float32 gradients, float64 state: measured 1e-8
    assert rel(g32, g64) < 1e-5         # float32 model against the float64 one: measured 1e-7


# ---------------------------------------------------------------- approximate methods
def test_approximate_methods_use_the_torch_problem_like_the_numpy_one(digits):
    """Each CPU method on the torch loss equals the same method on the autograd loss."""
    import autograd.numpy as anp
    import reversible

    X = digits[0][:60, :8].numpy()
    y = (digits[1][:60].numpy() % 2) * 2.0 - 1.0
    Xt, yt = torch.tensor(X), torch.tensor(y)

    def loss_np(w, meta, t):
        i = (np.arange(10) + 10 * t) % 60
        return anp.mean(anp.logaddexp(0, -y[i] * (X[i] @ w))) + anp.exp(meta[0]) * anp.sum(w ** 2)

    def loss_t(w, meta, t):
        i = (torch.arange(10) + 10 * t) % 60
        return torch.nn.functional.softplus(-yt[i] * (Xt[i] @ w)).mean() \
            + torch.exp(meta[0]) * (w ** 2).sum()

    T = 10
    w0 = np.linspace(-0.5, 0.5, 8)
    alphas, betas, meta = np.full(T, 0.5), np.full(T, 0.8), np.array([-3.0])
    for method, opts in [("checkpointed", {}), ("truncated", {"K": 3}), ("drmad", {}),
                         ("drmad_hybrid", {"K": 4}), ("neumann", {"terms": 5}), ("cg", {}),
                         ("identity", {})]:
        import autograd
        ref = autograd.grad(lambda m: anp.sum(reversible.sgd(
            loss_np, w0, alphas, betas, m, method=method, **opts) ** 2))(meta)
        mt = torch.tensor(meta, requires_grad=True)
        wT = rt.sgd(loss_t, torch.tensor(w0), torch.tensor(alphas), torch.tensor(betas), mt,
                    method=method, **opts)
        got = torch.autograd.grad((wT ** 2).sum(), mt)[0].numpy()
        assert np.allclose(got, ref, rtol=1e-9, atol=1e-14), method
        assert np.all(ref != 0), method


def test_blind_method_refuses_hyperparameters_it_cannot_see():
    alphas = torch.full((3,), 0.1, dtype=F64, requires_grad=True)
    wT = rt.sgd(lambda w, m, t: (w ** 2).sum(), torch.ones(2, dtype=F64), alphas,
                torch.full((3,), 0.5), method="cg")
    with pytest.raises(ValueError, match="cannot see alphas"):
        wT.sum().backward()


# ---------------------------------------------------------------- errors
def _ok_loss(w, meta, t):
    return (w ** 2).sum()


W0 = torch.ones(3, dtype=F64)
AL, BE = torch.full((4,), 0.1, dtype=F64), torch.full((4,), 0.5, dtype=F64)


@pytest.mark.parametrize("call, err, match", [
    (lambda: rt.sgd("loss", W0, AL, BE), TypeError, "train_loss must be a function"),
    (lambda: rt.sgd(_ok_loss, np.ones(3), AL, BE), TypeError, "params0 must be a torch tensor"),
    (lambda: rt.sgd(_ok_loss, torch.ones(3, dtype=torch.int64), AL, BE), TypeError,
     "real floating-point"),
    (lambda: rt.sgd(_ok_loss, {}, AL, BE), ValueError, "empty container"),
    (lambda: rt.sgd(_ok_loss, {"a": W0}, AL, BE, v0={"b": W0}), ValueError, "v0 must be a dict"),
    (lambda: rt.sgd(_ok_loss, W0, AL, BE, v0=torch.ones(2, dtype=F64)), ValueError,
     r"v0 has shape \(2,\)"),
    (lambda: rt.sgd(_ok_loss, W0, torch.ones(4, 2), BE), ValueError, r"alphas must have shape"),
    (lambda: rt.sgd(_ok_loss, W0, AL, BE[:3]), ValueError, "alphas has 4 steps but betas has 3"),
    (lambda: rt.sgd(_ok_loss, W0, AL, BE + 0.6), ValueError, r"every entry of betas must lie in \(0, 1\]"),
    (lambda: rt.sgd(_ok_loss, W0, AL * float("nan"), BE), ValueError, "alphas contains NaN"),
    (lambda: rt.sgd(_ok_loss, W0, "fast", BE), TypeError, "alphas must be a real float"),
    (lambda: rt.sgd(_ok_loss, W0, -AL, BE), ValueError, r"alphas must lie in \(0, inf\).*exp\(log_alpha\)"),
    (lambda: rt.sgd(_ok_loss, W0, AL * 1j, BE), TypeError, "alphas is complex"),
    (lambda: rt.sgd(_ok_loss, W0, AL, BE, progress="yes"), TypeError, "progress must be True or False"),
    (lambda: rt.sgd(_ok_loss, W0, AL, BE, frac_bits=70), ValueError, "frac_bits"),
    (lambda: rt.sgd(_ok_loss, W0, AL, BE, stats=[]), TypeError, "stats must be a dict"),
    (lambda: rt.sgd(_ok_loss, W0, AL, BE, method="bogus"), ValueError, "unknown method"),
    (lambda: rt.sgd(_ok_loss, W0, AL, BE, segment=2), ValueError, "does not take option"),
    (lambda: rt.sgd(_ok_loss, W0, AL, BE, method="unrolled", K=2), ValueError,
     "does not take option"),
    (lambda: rt.sgd(_ok_loss, W0, AL, BE, method="forward"), ValueError,
     "differentiates the training loop with autograd"),
    (lambda: rt.sgd(_ok_loss, W0, AL, BE, hvp="sideways"), ValueError, "hvp must be one of"),
    (lambda: rt.sgd(lambda w, m, t: w ** 2, W0, AL, BE), ValueError, "must return a scalar"),
    (lambda: rt.sgd(lambda w, m, t: 1.0, W0, AL, BE), TypeError, "must return a torch tensor"),
    (lambda: rt.sgd(lambda w, m, t: torch.log(w - 1).sum(), W0, AL, BE), NonFiniteError,
     "training loss is -inf at step 0"),
    (lambda: rt.sgd(_ok_loss, W0, AL, BE, torch.tensor([1 + 1j])), TypeError,
     "meta must be a real floating-point"),
])
def test_bad_input_is_a_clear_error(call, err, match):
    """Arguments are checked by reversible.inputs / validate, as for reversible.sgd."""
    with pytest.raises(err, match=match):
        call()


def test_global_random_state_in_the_loss_is_named_with_the_setting_that_fixes_it():
    def noisy(w, meta, t):
        return (torch.nn.functional.dropout(w, 0.5, training=True) ** 2).sum()

    with pytest.raises(ReversibilityError, match="not deterministic.*step 0.*from the step index t"):
        rt.sgd(noisy, torch.ones(50, dtype=F64), AL, BE)


def test_loss_that_changes_between_forward_and_reverse_fails_the_reversal_loudly():
    calls = {"n": 0}

    def drifting(w, meta, t):                      # deterministic at first, then not
        calls["n"] += 1
        return ((w - (0.0 if calls["n"] < 12 else 1e-3)) ** 2).sum()

    alphas = torch.full((6,), 0.1, dtype=F64, requires_grad=True)
    wT = rt.sgd(drifting, torch.ones(3, dtype=F64), alphas, torch.full((6,), 0.5, dtype=F64))
    with pytest.raises(ReversibilityError, match="did not return|diverged"):
        torch.autograd.grad(wT.sum(), alphas)


def test_nan_gradient_is_named_with_its_step():
    def blows_up(w, meta, t):
        return (w ** 2).sum() * (float("nan") if t == 3 else 1.0)

    with pytest.raises(NonFiniteError, match="step 3"):
        rt.sgd(blows_up, W0, torch.full((5,), 0.1), torch.full((5,), 0.5))
    with pytest.raises(NonFiniteError, match="step 3"):
        rt.sgd(blows_up, W0, torch.full((5,), 0.1), torch.full((5,), 0.5), method="unrolled")


def test_overflow_is_named_with_its_step():
    def steep(w, meta, t):
        return (1e6 * w ** 2).sum()

    with pytest.raises(FixedPointOverflowError, match="step"):
        rt.sgd(steep, W0, torch.full((40,), 1.0), torch.full((40,), 0.5))


def test_without_torch_the_subpackage_says_how_to_install_it():
    code = ("import sys; sys.modules['torch'] = None\n"
            "try:\n    import reversible.torch\nexcept ImportError as err:\n    print(err)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    assert 'pip install "reversible-learning[torch]"' in out.stdout, out.stderr


def test_importing_reversible_does_not_import_torch():
    tests = __import__("pathlib").Path(__file__).resolve().parent
    code = (f"import sys; sys.path.insert(0, {str(tests)!r}); import reversible, reversible.methods; "
            "from _gpu_import import load_gpu; load_gpu(); "     # reversible.gpu, installed or not
            "assert 'torch' not in sys.modules, 'torch imported'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# ---------------------------------------------------------------- CUDA path, emulated on the CPU
@pytest.fixture(scope="module")
def emulated():
    from _gpu_import import load_gpu        # this checkout's gpu/ (tests/ is on sys.path)
    load_gpu()
    from reversible.gpu import emulate
    if emulate.compiler() is None:
        pytest.skip("no C++ compiler for the CPU emulation of the CUDA kernels")
    return emulate.backend(sms=2)


def test_cuda_path_on_emulated_kernels_is_bit_identical_to_the_cpu_engine(digits, emulated):
    """The CUDA code path (reversible.gpu, DLPack exchange) run on the emulated kernels."""
    model = mlp()
    train_loss, val_loss = losses(model, digits)
    h = hypers(model, T=6)
    stats = {}
    params0, v0, log_alpha, logit_beta, meta = h
    outs = {}
    for name, kw in [("cpu", {}), ("emulated", {"gpu_backend": emulated, "stats": stats})]:
        pT = rt.sgd(train_loss, params0, log_alpha.exp(), torch.sigmoid(logit_beta), meta, v0=v0,
                    hvp="double", **kw)
        leaves = list(params0.values()) + list(v0.values()) + [log_alpha, logit_beta, meta]
        outs[name] = (pT, torch.autograd.grad(val_loss(pT), leaves))
    assert stats["reversed_exactly"] is True and stats["tail_capacity_words"] > 0
    assert all(torch.equal(outs["cpu"][0][k], outs["emulated"][0][k]) for k in params0)
    assert rel(outs["emulated"][1], outs["cpu"][1]) < 1e-13


def test_cuda_path_refuses_cpu_only_methods_and_names_nondeterminism(emulated):
    with pytest.raises(ValueError, match="runs on CPU tensors only"):
        rt.sgd(_ok_loss, W0, AL, BE, method="checkpointed", gpu_backend=emulated)
    calls = {"n": 0}

    def drifting(w, meta, t):
        calls["n"] += 1
        return ((w - (0.0 if calls["n"] < 10 else 1e-3)) ** 2).sum()

    alphas = torch.full((6,), 0.1, dtype=F64, requires_grad=True)
    wT = rt.sgd(drifting, torch.ones(3, dtype=F64), alphas, torch.full((6,), 0.5, dtype=F64),
                gpu_backend=emulated)
    with pytest.raises(ReversibilityError, match="(did not return|diverged).*from the step index t"):
        torch.autograd.grad(wT.sum(), alphas)


@pytest.fixture
def nondeterministic_settings(monkeypatch):
    """PyTorch's defaults (nothing forced deterministic), restored afterwards."""
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, True
    yield
    torch.use_deterministic_algorithms(before[0])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1:]


def test_determinism_advice_names_the_missing_settings(nondeterministic_settings):
    from reversible.torch import determinism
    text = determinism.settings_advice(torch.device("cuda"))
    for setting in ("torch.use_deterministic_algorithms(True)", "cudnn.deterministic = True",
                    "cudnn.benchmark = False", "CUBLAS_WORKSPACE_CONFIG=:4096:8",
                    "from the step index t"):
        assert setting in text
    cpu = determinism.settings_advice(torch.device("cpu"))
    assert "use_deterministic_algorithms(True)" in cpu and "cudnn" not in cpu
    torch.use_deterministic_algorithms(True)
    assert determinism.settings_advice(torch.device("cpu")).startswith(
        "the deterministic-algorithm settings are already on")


def test_hvp_whose_own_gradient_differs_is_caught_and_the_plain_gradient_used(monkeypatch):
    """If a mode's taped gradient differs in its last bits, the reversal must not use it."""
    from reversible.torch.derivatives import LossDerivatives
    original = LossDerivatives._vjp_double

    def off_by_an_ulp(self, w, meta, t, u):
        g, hw, hm = original(self, w, meta, t, u)
        return torch.nextafter(g, torch.full_like(g, float("inf"))), hw, hm

    monkeypatch.setattr(LossDerivatives, "_vjp_double", off_by_an_ulp)
    alphas = torch.full((6,), 0.1, dtype=F64, requires_grad=True)
    stats = {}
    wT = rt.sgd(lambda w, m, t: ((w - 0.1 * t) ** 4).sum(), torch.ones(4, dtype=F64), alphas,
                torch.full((6,), 0.7, dtype=F64), hvp="double", stats=stats)
    got = torch.autograd.grad(wT.sum(), alphas)[0]
    assert stats["reversed_exactly"] is True and "separate" in stats["hvp_gradient"]
    monkeypatch.setattr(LossDerivatives, "_vjp_double", original)
    ref = rt.sgd(lambda w, m, t: ((w - 0.1 * t) ** 4).sum(), torch.ones(4, dtype=F64), alphas,
                 torch.full((6,), 0.7, dtype=F64), method="unrolled")
    assert rel([got], [torch.autograd.grad(ref.sum(), alphas)[0]]) < 1e-12
