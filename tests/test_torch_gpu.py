"""reversible.torch on CUDA tensors (skipped without PyTorch, CUDA or CuPy).

The same code path runs in CI on the CPU emulation of the kernels
(tests/test_torch.py); these tests add the real device: DLPack exchange with
CuPy, PyTorch's stream, cuDNN / cuBLAS determinism.
"""

import os

import pytest

torch = pytest.importorskip("torch")
rt = pytest.importorskip("reversible.torch")

pytestmark = pytest.mark.gpu

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")    # before CUDA starts


def _has_cuda_and_cupy():
    if not torch.cuda.is_available():
        return False
    from _gpu_import import load_gpu        # this checkout's gpu/ (tests/ is on sys.path)
    return load_gpu().has_cuda()


if not _has_cuda_and_cupy():
    pytest.skip("needs a CUDA device with PyTorch and CuPy", allow_module_level=True)

from reversible import NonFiniteError, ReversibilityError  # noqa: E402

F64 = torch.float64
DEV = torch.device("cuda")


@pytest.fixture(autouse=True)
def deterministic():
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.use_deterministic_algorithms(False)


def conv_problem(dtype=F64, T=10):
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X[:400] / 16.0, dtype=dtype, device=DEV).reshape(-1, 1, 8, 8)
    y = torch.tensor(y[:400], device=DEV)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Tanh(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 10)).to(DEV, dtype)

    def train_loss(params, meta, t):
        i = torch.arange(t * 25, (t + 1) * 25, device=DEV) % 300
        out = torch.func.functional_call(model, params, (X[i],))
        return torch.nn.functional.cross_entropy(out, y[i]) + torch.exp(meta) * sum(
            (p ** 2).sum() for p in params.values())

    def val_loss(params):
        return torch.nn.functional.cross_entropy(
            torch.func.functional_call(model, params, (X[300:],)), y[300:])

    params0 = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
    alphas = torch.full((T, len(params0)), 0.3, dtype=F64, device=DEV, requires_grad=True)
    betas = torch.full((T,), 0.9, dtype=F64, device=DEV, requires_grad=True)
    meta = torch.tensor(-5.0, dtype=F64, device=DEV, requires_grad=True)
    return train_loss, val_loss, params0, alphas, betas, meta


def hypergradients(problem, method, **kw):
    train_loss, val_loss, params0, alphas, betas, meta = problem
    pT = rt.sgd(train_loss, params0, alphas, betas, meta, method=method, **kw)
    L = val_loss(pT)
    return pT, torch.autograd.grad(L, list(params0.values()) + [alphas, betas, meta])


def rel(a, b):
    a, b = torch.cat([x.reshape(-1) for x in a]), torch.cat([x.reshape(-1) for x in b])
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("dtype, tol", [(F64, 1e-7), (torch.float32, 1e-4)])
def test_cuda_conv_net_exact_matches_unrolled(dtype, tol):
    problem = conv_problem(dtype)
    stats = {}
    pT, g_exact = hypergradients(problem, "exact", stats=stats)
    _, g_unrolled = hypergradients(problem, "unrolled")
    assert stats["reversed_exactly"] is True
    assert all(v.device.type == "cuda" and v.dtype == dtype for v in pT.values())
    assert all(g.device.type == "cuda" for g in g_exact)
    assert rel(g_exact, g_unrolled) < tol


def test_cuda_hvp_modes_agree():
    problem = conv_problem(T=6)
    _, g_f = hypergradients(problem, "exact", hvp="forward")
    _, g_d = hypergradients(problem, "exact", hvp="double")
    assert rel(g_f, g_d) < 1e-10


def test_cuda_nonfinite_gradient_is_named_with_its_step():
    def loss(w, meta, t):
        return (w ** 2).sum() * (float("inf") if t == 4 else 1.0)

    with pytest.raises(NonFiniteError, match="step 4"):
        rt.sgd(loss, torch.ones(8, dtype=F64, device=DEV), torch.full((6,), 0.1),
               torch.full((6,), 0.5), check_every=2)


def test_cuda_nondeterministic_kernel_is_detected_with_the_setting_that_fixes_it():
    """index_add_ with repeated indices uses atomics: its sums vary run to run on a GPU."""
    torch.use_deterministic_algorithms(False)
    idx = torch.randint(0, 4, (1 << 16,), device=DEV, generator=torch.Generator(DEV).manual_seed(0))
    src = torch.randn(1 << 16, dtype=torch.float32, device=DEV,
                      generator=torch.Generator(DEV).manual_seed(1))

    def loss(w, meta, t):
        sums = torch.zeros(4, dtype=torch.float32, device=DEV).index_add(0, idx, src * w[idx])
        return (sums ** 2).sum()

    w = torch.ones(4, dtype=torch.float32, device=DEV)
    first = torch.func.grad(lambda x: loss(x, None, 0))(w)
    if all(torch.equal(first, torch.func.grad(lambda x: loss(x, None, 0))(w)) for _ in range(5)):
        pytest.skip("this device's atomics happened to sum in one order every time")
    with pytest.raises(ReversibilityError, match="use_deterministic_algorithms"):
        alphas = torch.full((20,), 1e-6, dtype=F64, device=DEV, requires_grad=True)
        wT = rt.sgd(loss, w, alphas, torch.full((20,), 0.9))
        torch.autograd.grad(wT.sum(), alphas)


def test_cuda_steps_make_no_host_synchronisation(monkeypatch):
    """PyTorch's sync debug mode raises on any synchronising torch call in a step's derivatives."""
    from reversible.torch import cuda
    problem = conv_problem(T=8)
    train_loss, val_loss, params0, alphas, betas, meta = problem
    steps = []

    def strict(original, first_step):
        def wrapped(self, w, m, t, *rest):
            if t != first_step:     # the first reverse step checks its gradient's bits once
                torch.cuda.set_sync_debug_mode("error")
            try:
                return original(self, w, m, t, *rest)
            finally:
                torch.cuda.set_sync_debug_mode("default")
                steps.append(t)
        return wrapped

    monkeypatch.setattr(cuda.CudaRun, "grad", strict(cuda.CudaRun.grad, None))
    monkeypatch.setattr(cuda.CudaRun, "vjp", strict(cuda.CudaRun.vjp, 7))
    pT = rt.sgd(train_loss, params0, alphas, betas, meta, hvp="double", check_every=1000)
    torch.autograd.grad(val_loss(pT), alphas)
    assert len(steps) == 16
