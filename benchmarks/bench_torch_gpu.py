"""PyTorch front end on a GPU: a ResNet-18-sized model on CIFAR-10-shaped inputs (issue 12, item 6).

    python -m benchmarks.bench_torch_gpu            # on a CUDA machine (several minutes)
    python -m benchmarks.bench_torch_gpu --quick    # toy sizes; runs on the CPU too (seconds)

Figures (JSON to ``--out``, default ``results/bench_torch_gpu.json``):

(a) exact hypergradient (``reversible.torch.sgd`` forward + reverse) over
    plain PyTorch training (``loss.backward()`` and an in-place momentum
    update), same model, data and schedules; target <= 3x.  Beside it, one
    gradient and one Hessian-vector product of each mode timed alone, and
    the bound ``(grad + HVP) / grad``;
(b) peak device memory of ``method="exact"`` over ``method="unrolled"``
    (PyTorch's peak allocation plus CuPy's memory pool, which holds the
    engine's state and information buffer);
(c) the largest weights x steps run: a synthetic loss that is elementwise in
    the weights (so the engine and its buffer, not the model, are what is
    measured) at ``--big-n`` weights for ``--big-t`` steps, beta = 0.9
    (aim: 10**8 x 10**4, which an unrolled trajectory could not hold: 8 TB
    of weights alone), with the buffer's size and the reversal check.

The model is ResNet-18 (basic blocks [2, 2, 2, 2], widths 64-512, about 11.2
million weights) written in plain PyTorch, with GroupNorm in place of
BatchNorm so that the loss is a pure function of the weights (BatchNorm's
running statistics are state).  Data are random CIFAR-10-shaped tensors
(3 x 32 x 32, 10 classes) drawn from a fixed seed.  Deterministic algorithms
are switched on, as the exact method requires.
"""

import argparse
import json
import os
import pathlib
import platform
import statistics
import time

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")     # before CUDA starts

FULL = dict(width=64, batch=128, T=50, T_memory=20, reps=3, big_n=10 ** 8, big_t=10 ** 4)
QUICK = dict(width=2, batch=4, T=3, T_memory=2, reps=1, big_n=10 ** 4, big_t=50)


def resnet18(width, num_classes=10):
    """ResNet-18 (CIFAR stem: 3x3 conv, no max-pool) with GroupNorm; plain torch."""
    import torch
    nn = torch.nn

    def norm(c):
        return nn.GroupNorm(min(32, c // 2 if c >= 2 else 1), c)

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.n1 = norm(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.n2 = norm(cout)
            self.skip = nn.Sequential()
            if stride != 1 or cin != cout:
                self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), norm(cout))

        def forward(self, x):
            out = torch.relu(self.n1(self.conv1(x)))
            return torch.relu(self.n2(self.conv2(out)) + self.skip(x))

    widths = [width, 2 * width, 4 * width, 8 * width]
    layers = [nn.Conv2d(3, width, 3, 1, 1, bias=False), norm(width), nn.ReLU()]
    cin = width
    for i, w in enumerate(widths):
        for j in range(2):
            layers.append(Block(cin, w, 2 if (j == 0 and i > 0) else 1))
            cin = w
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


def problem(cfg, device, dtype):
    """``(model, params0, train_loss, val_loss, alphas, betas)`` on synthetic CIFAR-shaped data."""
    import torch
    gen = torch.Generator(device="cpu").manual_seed(0)
    n_train = cfg["batch"] * 8
    X = torch.randn(n_train + cfg["batch"], 3, 32, 32, generator=gen).to(device, dtype)
    y = torch.randint(0, 10, (n_train + cfg["batch"],), generator=gen).to(device)
    torch.manual_seed(0)
    model = resnet18(cfg["width"]).to(device, dtype)
    params0 = {k: p.detach() for k, p in model.named_parameters()}
    b = cfg["batch"]

    def train_loss(params, meta, t):
        i = (torch.arange(b, device=device) + b * t) % n_train
        out = torch.func.functional_call(model, params, (X[i],))
        return torch.nn.functional.cross_entropy(out, y[i])

    def val_loss(params):
        out = torch.func.functional_call(model, params, (X[n_train:],))
        return torch.nn.functional.cross_entropy(out, y[n_train:])

    return model, params0, train_loss, val_loss


def schedules(T, G, device):
    import torch
    alphas = torch.full((T, G), 0.05, dtype=torch.float64, device=device)
    betas = torch.full((T, G), 0.9, dtype=torch.float64, device=device)
    return alphas, betas


def synchronize(device):
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_training(params0, train_loss, alphas, betas):
    import torch
    names = list(params0)
    params = {k: v.detach().clone().requires_grad_() for k, v in params0.items()}
    velocity = {k: torch.zeros_like(v) for k, v in params.items()}
    a, b = alphas.tolist(), betas.tolist()            # host copies, once
    for t in range(len(a)):
        loss = train_loss(params, None, t)
        for p in params.values():
            p.grad = None
        loss.backward()
        with torch.no_grad():
            for g, k in enumerate(names):
                velocity[k].mul_(b[t][g]).sub_((1 - b[t][g]) * params[k].grad)
                params[k].add_(velocity[k], alpha=a[t][g])
    return params


def hypergradient(rt, method, params0, train_loss, val_loss, alphas, betas, stats=None, **kw):
    import torch
    a = alphas.clone().requires_grad_()
    b = betas.clone().requires_grad_()
    pT = rt.sgd(train_loss, params0, a, b, method=method, stats=stats, **kw)
    return torch.autograd.grad(val_loss(pT), [a, b])


def timed(device, f):
    synchronize(device)
    t0 = time.perf_counter()
    f()
    synchronize(device)
    return time.perf_counter() - t0


def peak_memory(device, f):
    """Peak bytes of PyTorch's allocator plus CuPy's pool during ``f()`` (None on the CPU)."""
    if device.type != "cuda":
        f()
        return None
    import cupy
    import torch
    pool = cupy.get_default_memory_pool()
    pool.free_all_blocks()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    f()
    synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) + pool.total_bytes())


def big_run(rt, N, T, device, progress):
    """Exact training of an elementwise loss at N weights for T steps, and its reverse pass."""
    import torch
    gen = torch.Generator(device="cpu").manual_seed(1)
    c = torch.rand(N, generator=gen, dtype=torch.float32).to(device)

    def loss(w, meta, t):          # 0.5 c (w - s_t)^2 with a shift per step: cheap, elementwise
        return 0.5 * (c * (w - 0.01 * ((t % 7) - 3)) ** 2).sum()

    w0 = torch.zeros(N, dtype=torch.float32, device=device)
    log_alpha = torch.full((T,), -3.0, dtype=torch.float64, device=device, requires_grad=True)
    stats = {}
    t_fwd = time.perf_counter()
    wT = rt.sgd(loss, w0, log_alpha.exp(), torch.full((T,), 0.9, dtype=torch.float64),
                stats=stats, progress=progress, hvp="double")
    synchronize(device)
    t_fwd = time.perf_counter() - t_fwd
    t_rev = time.perf_counter()
    (g,) = torch.autograd.grad(wT.sum(), log_alpha)
    synchronize(device)
    t_rev = time.perf_counter() - t_rev
    return {"N": N, "T": T, "forward_seconds": t_fwd, "reverse_seconds": t_rev,
            "buffer_bytes": stats.get("buffer_bytes"), "bits_per_element_step":
            stats.get("bits_per_element_step"), "reversed_exactly": stats.get("reversed_exactly"),
            "unrolled_weights_bytes": 4 * N * T, "hypergradient_finite": bool(torch.isfinite(g).all())}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="toy sizes (seconds; CPU is fine)")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--big-n", type=int, default=None, help="weights of run (c)")
    ap.add_argument("--big-t", type=int, default=None, help="steps of run (c)")
    ap.add_argument("--skip-big", action="store_true", help="leave out run (c)")
    ap.add_argument("--out", default="results/bench_torch_gpu.json")
    args = ap.parse_args(argv)
    import torch

    cfg = dict(QUICK if args.quick else FULL)
    cfg["big_n"] = args.big_n or cfg["big_n"]
    cfg["big_t"] = args.big_t or cfg["big_t"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    settings = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
                torch.backends.cudnn.benchmark, torch.get_num_threads())
    if device.type == "cpu":
        torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        return _measure(args, cfg, device)
    finally:                                    # leave the caller's PyTorch settings as they were
        torch.use_deterministic_algorithms(settings[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = settings[1:3]
        torch.set_num_threads(settings[3])


def _measure(args, cfg, device):
    import torch

    import reversible.torch as rt
    from reversible.torch.derivatives import LossDerivatives
    from reversible.torch.tree import TensorTree

    dtype = getattr(torch, args.dtype)
    model, params0, train_loss, val_loss = problem(cfg, device, dtype)
    tree = TensorTree(params0, "params0")
    G = tree.num_groups
    alphas, betas = schedules(cfg["T"], G, device)
    res = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "torch": torch.__version__, "machine": platform.platform(), "dtype": args.dtype,
           "model": f"ResNet-18 (GroupNorm), width {cfg['width']}", "N": tree.size,
           "groups": G, "batch": cfg["batch"], "T": cfg["T"]}
    print(f"{res['model']}: N = {tree.size:,} weights in {G} tensors, {args.dtype}, "
          f"batch {cfg['batch']} of 3x32x32, T = {cfg['T']}, on {res['device']}")

    # (a) exact / plain, interleaved
    stats = {}
    runs = {"plain": lambda: plain_training(params0, train_loss, alphas, betas),
            "exact": lambda: hypergradient(rt, "exact", params0, train_loss, val_loss, alphas,
                                           betas, stats)}
    for f in runs.values():
        f()                                       # warm-up; "auto" picks its HVP mode here
    times = {k: [] for k in runs}
    for _ in range(cfg["reps"]):
        for k, f in runs.items():
            times[k].append(timed(device, f))
    med = {k: statistics.median(v) for k, v in times.items()}
    res.update(seconds=med, exact_over_plain=med["exact"] / med["plain"], hvp_mode=stats.get("hvp"),
               reversed_exactly=stats.get("reversed_exactly"))
    print(f"(a) plain {med['plain']:.3f} s, exact hypergradient {med['exact']:.3f} s: "
          f"{res['exact_over_plain']:.2f}x (target <= 3), HVP mode {res['hvp_mode']}, "
          f"reversed exactly: {res['reversed_exactly']}")

    w = tree.flatten(params0)
    u = torch.randn(w.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2)).to(device)
    unit = {}
    for mode in ("grad",) + LossDerivatives.MODES:
        d = LossDerivatives(train_loss, tree, None, "double" if mode == "grad" else mode)
        f = (lambda d=d: d.grad(w, None, 1)) if mode == "grad" else (lambda d=d: d.vjp(w, None, 1, u))
        try:
            f()
            unit[mode] = statistics.median(timed(device, f) for _ in range(cfg["reps"]))
        except (RuntimeError, NotImplementedError) as err:
            unit[mode] = None
            print(f"    HVP mode {mode} failed: {str(err).splitlines()[0]}")
    res["per_call_seconds"] = unit
    best = min((v for k, v in unit.items() if k != "grad" and v is not None), default=None)
    if best is not None:
        res["bound_exact_over_plain"] = 1.0 + best / unit["grad"]
        print("    one gradient {:.2f} ms; one HVP: {}; bound (grad + HVP) / grad = {:.2f}x".format(
            1e3 * unit["grad"], ", ".join(f"{k} {1e3 * v:.2f} ms" for k, v in unit.items()
                                          if k != "grad" and v is not None),
            res["bound_exact_over_plain"]))

    # (b) peak memory, exact over unrolled
    a_m, b_m = schedules(cfg["T_memory"], G, device)
    mem = {m: peak_memory(device, lambda m=m: hypergradient(rt, m, params0, train_loss, val_loss,
                                                           a_m, b_m))
           for m in ("exact", "unrolled")}
    res["peak_memory_bytes"] = mem
    res["T_memory"] = cfg["T_memory"]
    if mem["exact"] is not None:
        res["peak_memory_exact_over_unrolled"] = mem["exact"] / mem["unrolled"]
        print(f"(b) peak memory at T = {cfg['T_memory']}: exact {mem['exact'] / 2**30:.2f} GiB, "
              f"unrolled {mem['unrolled'] / 2**30:.2f} GiB: "
              f"{res['peak_memory_exact_over_unrolled']:.3f}x")
    else:
        print("(b) peak memory: measured on CUDA only")

    # (c) the largest weights x steps
    if not args.skip_big:
        big = big_run(rt, cfg["big_n"], cfg["big_t"], device, progress=not args.quick)
        res["largest"] = big
        print(f"(c) N = {big['N']:.2g} x T = {big['T']:.2g}: forward {big['forward_seconds']:.1f} s, "
              f"reverse {big['reverse_seconds']:.1f} s, buffer {big['buffer_bytes'] / 2**30:.3g} GiB "
              f"({big['bits_per_element_step']:.3f} bits per element-step; an unrolled trajectory "
              f"needs {big['unrolled_weights_bytes'] / 2**40:.3g} TiB for the weights alone), "
              f"reversed exactly: {big['reversed_exactly']}")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"wrote {out}")
    return res


if __name__ == "__main__":
    main()
