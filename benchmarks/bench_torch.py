"""PyTorch front end on the CPU: exact hypergradient over plain torch training (issue 12).

    python -m benchmarks.bench_torch            # the docs' conv net, T = 60 (about a minute)
    python -m benchmarks.bench_torch --quick    # T = 6, a smoke test (seconds)

The model is the conv net of ``docs/pytorch.md`` (Conv2d(1, 8, 3), tanh,
Linear(288, 10), float64) on the digits, batch 50, per-layer schedules.
Contenders, interleaved and repeated (medians of CPU time of this process):

* ``plain``: T steps of SGD with momentum written in plain PyTorch
  (``loss.backward()`` and an in-place update), no hypergradient;
* ``exact``: ``reversible.torch.sgd`` forward plus the reverse pass for the
  hypergradient of the validation loss (all hyperparameters);
* ``unrolled``: the same hypergradient by PyTorch through the float64 loop.

Also printed: one gradient and one Hessian-vector product (the mode ``auto``
picks) timed alone, and the bound ``(T grads + T HVPs) / (T grads)`` that the
exact hypergradient cannot beat.  PyTorch runs on one thread
(``--threads``): on a small shared machine more threads only add contention.
Writes JSON to ``--out`` (default ``results/bench_torch.json``).
"""

import argparse
import json
import pathlib
import platform
import statistics
import time

FULL = dict(T=60, batch=50, reps=5, calls=10)
QUICK = dict(T=6, batch=50, reps=1, calls=2)


def conv_problem(T, batch):
    """The docs' conv net on digits: ``(model, params0, train_loss, val_loss, alphas, betas)``."""
    import torch
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X / 16.0).reshape(-1, 1, 8, 8)
    y = torch.tensor(y)
    X_train, y_train, X_val, y_val = X[:1000], y[:1000], X[1000:], y[1000:]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.Tanh(), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 6 * 6, 10)).double()
    params0 = {name: p.detach() for name, p in model.named_parameters()}

    def train_loss(params, meta, t):
        i = torch.arange(t * batch, (t + 1) * batch) % len(X_train)
        out = torch.func.functional_call(model, params, (X_train[i],))
        return torch.nn.functional.cross_entropy(out, y_train[i])

    def val_loss(params):
        out = torch.func.functional_call(model, params, (X_val,))
        return torch.nn.functional.cross_entropy(out, y_val)

    layer_of = torch.tensor([0, 0, 1, 1])
    ramp = torch.linspace(0, 1, T, dtype=torch.float64)[:, None]
    alphas = torch.exp(-1.0 + 0.5 * ramp * torch.tensor([1.0, -1.0]))[:, layer_of]
    betas = torch.sigmoid(2.0 + ramp * torch.tensor([0.0, 1.0]))[:, layer_of]
    return model, params0, train_loss, val_loss, alphas, betas


def plain_training(params0, train_loss, alphas, betas):
    """SGD with momentum in plain PyTorch (the baseline): returns the trained parameters."""
    import torch
    names = list(params0)
    params = {k: v.detach().clone().requires_grad_() for k, v in params0.items()}
    velocity = {k: torch.zeros_like(v) for k, v in params0.items()}
    for t in range(alphas.shape[0]):
        loss = train_loss(params, None, t)
        for p in params.values():
            p.grad = None
        loss.backward()
        with torch.no_grad():
            for g, k in enumerate(names):
                v = velocity[k]
                v.mul_(betas[t, g]).sub_((1 - betas[t, g]) * params[k].grad)
                params[k].add_(alphas[t, g] * v)
    return params


def hypergradient(rt, method, params0, train_loss, val_loss, alphas, betas, stats=None):
    import torch
    p0 = {k: v.clone().requires_grad_() for k, v in params0.items()}
    a, b = alphas.clone().requires_grad_(), betas.clone().requires_grad_()
    pT = rt.sgd(train_loss, p0, a, b, method=method, stats=stats)
    return torch.autograd.grad(val_loss(pT), list(p0.values()) + [a, b])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="T = 6, one repetition (seconds)")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    ap.add_argument("--out", default="results/bench_torch.json")
    args = ap.parse_args(argv)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _measure(args)
    finally:
        torch.set_num_threads(threads)              # leave the caller's setting as it was


def _measure(args):
    import torch

    import reversible.torch as rt
    from reversible.torch.derivatives import LossDerivatives
    from reversible.torch.tree import TensorTree

    cfg = QUICK if args.quick else FULL
    T, reps = cfg["T"], cfg["reps"]
    model, params0, train_loss, val_loss, alphas, betas = conv_problem(T, cfg["batch"])
    stats = {}
    contenders = {
        "plain": lambda: plain_training(params0, train_loss, alphas, betas),
        "exact": lambda: hypergradient(rt, "exact", params0, train_loss, val_loss, alphas, betas,
                                       stats),
        "unrolled": lambda: hypergradient(rt, "unrolled", params0, train_loss, val_loss, alphas,
                                          betas),
    }
    for f in contenders.values():      # warm-up (numba compilation, torch's first calls)
        f()
    times = {name: [] for name in contenders}
    for _ in range(reps):              # interleaved repetitions
        for name, f in contenders.items():
            t0 = time.process_time()
            f()
            times[name].append(time.process_time() - t0)
    med = {name: statistics.median(v) for name, v in times.items()}

    # one gradient and one HVP alone, in the mode "auto" chose
    tree = TensorTree(params0, "params0")
    derivs = LossDerivatives(train_loss, tree, None, stats.get("hvp", "double"))
    w = tree.flatten(params0)
    u = torch.randn(w.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    each = {"gradient": lambda: derivs.grad(w, None, 1),
            "hvp": lambda: derivs.vjp(w, None, 1, u)}
    for f in each.values():
        f()
    unit = {name: [] for name in each}
    for _ in range(reps):
        for name, f in each.items():
            t0 = time.process_time()
            for _ in range(cfg["calls"]):
                f()
            unit[name].append((time.process_time() - t0) / cfg["calls"])
    unit = {name: statistics.median(v) for name, v in unit.items()}

    res = {
        "model": "conv net of docs/pytorch.md (Conv2d(1,8,3), tanh, Linear(288,10)), float64",
        "N": tree.size, "T": T, "batch": cfg["batch"], "reps": reps, "threads": args.threads,
        "seconds": med,
        "exact_over_plain": med["exact"] / med["plain"],
        "unrolled_over_plain": med["unrolled"] / med["plain"],
        "gradient_seconds": unit["gradient"], "hvp_seconds": unit["hvp"],
        "hvp_mode": stats.get("hvp"),
        "bound_exact_over_plain": 1.0 + unit["hvp"] / unit["gradient"],
        "reversed_exactly": stats.get("reversed_exactly"),
        "torch": torch.__version__, "machine": platform.platform(),
    }
    print(f"conv net on digits, N = {res['N']}, T = {T}, batch {cfg['batch']}, {args.threads} "
          f"thread(s), medians of {reps} interleaved repetitions (CPU seconds)")
    for name in contenders:
        print(f"  {name:9s} {med[name]:8.3f} s")
    print(f"  exact hypergradient / plain training: {res['exact_over_plain']:.2f}x "
          f"(unrolled: {res['unrolled_over_plain']:.2f}x)")
    print(f"  one gradient {1e3 * unit['gradient']:.2f} ms, one HVP ({res['hvp_mode']}) "
          f"{1e3 * unit['hvp']:.2f} ms: bound (grad + HVP) / grad = {res['bound_exact_over_plain']:.2f}x")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"wrote {out}")
    return res


if __name__ == "__main__":
    main()
