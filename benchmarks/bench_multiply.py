"""The engine's multiply by beta: rounding, bit cost and kernel speed (about a minute).

    python -m benchmarks.bench_multiply [--quick]

Prints, for momenta from 2**-32 to 1 - 2**-32:
1. the largest ``|V' - V n / 2**32|`` over random int64 velocities and several steps,
   in exact integer arithmetic (the engine promises < 1 unit);
2. bits held over ``log2(2**32 / n)`` per multiply, T = 10**4 steps on 1,000 elements;
3. one exact forward step and one reverse step at N = 10**6 with the NumPy specification
   and the numba kernel, against a plain float64 momentum step (wall-clock medians of
   interleaved repetitions; on a busy machine only the ratios mean much);
4. faithfulness on the digits MLP [64, 50, 50, 10], T = 50: relative difference of each
   hypergradient kind and of w_T from autograd through the float64 loop, and of central
   finite differences (h = 1e-4) of the exact map along a random direction over all
   hyperparameters and along the momenta alone (the problem of tests/test_faithfulness.py).
"""

import argparse
import time

import numpy as np

from reversible import kernels
from reversible.buffer import InfoBuffer, ideal_bits, quantize_beta
from reversible.fixedpoint import to_fixed
from reversible.trajectory import Schedule

BETAS = (2.0 ** -32, 0.3, 0.5, 0.9, 0.99, 0.999, 0.9999, 1 - 2.0 ** -32)


def max_deviation(beta, rng, N=2000, steps=8):
    n = int(quantize_beta(beta))
    buf = InfoBuffer(N)
    V = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, N, endpoint=True)
    worst = 0.0
    for _ in range(steps):
        V1 = buf.multiply(V, n)
        worst = max(worst, max(abs(int(a) * 2 ** 32 - int(b) * n) for a, b in zip(V1, V)) / 2 ** 32)
        V = V1
    return worst


def bits_ratio(beta, rng, N, T):
    n = quantize_beta(beta)
    buf = InfoBuffer(N)
    V = rng.integers(-(1 << 52), 1 << 52, N)
    for _ in range(T):
        V = buf.multiply(V, n) + rng.integers(-(1 << 44), 1 << 44, N)
    return buf.bits() / (N * T * float(ideal_bits(n)))


def step_times(N, reps, beta=0.9, F=52):
    """Median seconds of a plain float64 step and of exact forward / reverse steps per kernel."""
    rng = np.random.default_rng(0)
    w, g = rng.standard_normal(N), rng.standard_normal(N)
    sched = Schedule.build(np.full(reps, 0.01), np.full(reps, beta), np.zeros(N, np.int64))
    b = float(sched.betas[0, 0])
    times = {"plain float64 step": []}
    states = {}
    for name in ("numpy", "numba"):
        k = kernels.get(name)
        states[name] = [k, to_fixed(w, F), np.zeros(N, np.int64), InfoBuffer(N), np.empty(N)]
        times[f"{name} forward"], times[f"{name} reverse"] = [], []
    v, ww = np.zeros(N), w.copy()
    for t in range(reps):
        t0 = time.perf_counter()
        v *= b
        v -= (1.0 - b) * g
        ww += 0.01 * v
        times["plain float64 step"].append(time.perf_counter() - t0)
        for name, s in states.items():
            t0 = time.perf_counter()
            s[1], s[2] = s[0].forward_step(s[1], s[2], g, sched.alphas[t], sched.n[t], sched, s[3],
                                           F, t, w_out=s[4])
            times[f"{name} forward"].append(time.perf_counter() - t0)
    for t in reversed(range(reps)):
        for name, s in states.items():
            t0 = time.perf_counter()
            s[1] = s[0].reverse_position(s[1], s[2], sched.alphas[t], sched, F, t)
            s[2] = s[0].reverse_velocity(s[2], g, sched.n[t], sched, s[3], F, t)
            times[f"{name} reverse"].append(time.perf_counter() - t0)
    for name, s in states.items():
        if not s[3].is_empty():
            raise RuntimeError(f"{name} kernel did not reverse exactly")
    return {k: float(np.median(v)) for k, v in times.items()}


def faithfulness():
    """Relative errors of the exact engine against the float64 loop and finite differences."""
    import autograd

    import reversible
    from reversible import data, models

    digits = data.load_digits()
    rng = np.random.default_rng(0)
    perm = rng.permutation(digits.X.shape[0])
    sizes, T = [64, 50, 50, 10], 50
    loss = models.make_train_loss((digits.X[perm[:1000]], digits.y[perm[:1000]]), sizes, 100,
                                  seed=1, l2="group")
    Xv, yv = digits.X[perm[1000:1400]], digits.y[perm[1000:1400]]
    w0 = models.init_mlp(sizes, 0.1, seed=2)
    G = len(w0)
    args = [w0, [0.01 * rng.standard_normal(np.shape(p)) for p in w0],
            0.3 * (1 + 0.2 * rng.uniform(-1, 1, (T, G))), 0.9 + 0.05 * rng.uniform(-1, 1, (T, G)),
            -4.0 + 0.1 * np.arange(G)]
    names = ("w0", "v0", "alphas", "betas", "meta")

    def flat(x):
        return np.concatenate([np.ravel(a) for a in x]) if isinstance(x, list) else np.ravel(x)

    def train(method, a):
        return reversible.sgd(loss, a[0], a[2], a[3], a[4], v0=a[1], method=method)

    def objective(method):
        return lambda *a: models.nll(train(method, list(a)), Xv, yv)

    grads = {m: autograd.grad(objective(m), tuple(range(5)))(*args) for m in ("exact", "unrolled")}
    out = {}
    for k, ge, gu in zip(names, grads["exact"], grads["unrolled"]):
        out[k] = float(np.linalg.norm(flat(ge) - flat(gu)) / np.linalg.norm(flat(gu)))
    we, wu = flat(train("exact", args)), flat(train("unrolled", args))
    out["w_T"] = float(np.linalg.norm(we - wu) / np.linalg.norm(wu))
    f, h = objective("exact"), 1e-4
    scale = (0.1, 0.01, 0.05, 0.05, 1.0)
    for which in ("all", "betas"):
        r = np.random.default_rng(10)
        d = [[s * r.standard_normal(np.shape(p)) for p in a] if isinstance(a, list)
             else s * r.standard_normal(np.shape(a)) for s, a in zip(scale, args)]
        if which == "betas":
            d = [[0 * p for p in x] if isinstance(x, list) else (x if k == 3 else 0 * x)
                 for k, x in enumerate(d)]
        moved = [[[p + sgn * h * q for p, q in zip(a, b)] if isinstance(a, list) else a + sgn * h * b
                  for a, b in zip(args, d)] for sgn in (1, -1)]
        fd = (f(*moved[0]) - f(*moved[1])) / (2 * h)
        an = sum(float(np.dot(flat(g), flat(x))) for g, x in zip(grads["exact"], d))
        out[f"finite difference ({which})"] = abs(fd - an) / abs(an)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(1)
    N_bits, T_bits = (100, 500) if args.quick else (1000, 10_000)
    N_step, reps = (10_000, 4) if args.quick else (1_000_000, 8)
    print(f"compiled the numba kernel in {kernels.warm_up():.1f} s (excluded below)")
    print(f"{'beta':>14}  {'max |V1 - V n/2^32|':>20}  bits/ideal - 1 (T={T_bits}, N={N_bits})")
    for beta in BETAS:
        print(f"{beta:14.10g}  {max_deviation(beta, rng):20.10f}  "
              f"{bits_ratio(beta, rng, N_bits, T_bits) - 1:+.2e}")
    times = step_times(N_step, reps)
    plain = times["plain float64 step"]
    print(f"\nstep times at N = {N_step} (beta = 0.9, medians of {reps} interleaved steps):")
    for name, sec in times.items():
        print(f"  {name:<20} {sec * 1e3:9.2f} ms  {sec / plain:6.2f}x plain")
    if not args.quick:
        print("\nfaithfulness, digits MLP [64, 50, 50, 10], T = 50 (relative differences):")
        for name, err in faithfulness().items():
            print(f"  {name:<26} {err:.2e}")


if __name__ == "__main__":
    main()
