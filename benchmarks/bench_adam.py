"""Exact Adam benchmarks (issue 11, item 5): one command, ratios measured side by side.

    python -m benchmarks.bench_adam            # full sizes (a few minutes on 2 cores)
    python -m benchmarks.bench_adam --quick    # small sizes, well under a minute

Prints each figure against its target and writes JSON (``--out``, default
``results/bench_adam.json``):

(a) one exact Adam step (numba kernel, and the NumPy specification) over one
    float64 NumPy Adam step at N = 10**6 (target <= 2);
(b) exact Adam hypergradient (forward + reverse through ``reversible.adam``)
    over plain float64 Adam training with ``autograd.grad`` of the same loss,
    MLP [64, 50, 50, 10] on digits, batch 100, T = 300 (target <= 3.5), beside
    the second-order-product bound ``(2 grad + HVP) / grad`` measured on the
    same model: the reverse pass needs the gradient and one Hessian-vector
    product per step, so no exact method can go below it;
(c) information-buffer bits per element-step over the ideal
    ``log2(1/beta1) + log2(1/beta2) + log2(1/d)`` (target <= 1.001);
(d) peak traced memory (``tracemalloc``) of ``method="exact"`` over
    ``method="unrolled"`` for the hypergradient of (b) at T = 1000.

Times are wall-clock by default (``--clock cpu`` for process CPU time, which
counts every thread of a parallel kernel); contenders are interleaved with
:func:`benchmarks.bench_engine.interleaved` and medians of repeats reported.
On a shared machine the numbers are indicative.
"""

import argparse
import json
import pathlib
import time
import tracemalloc

import numpy as np

from benchmarks.bench_engine import CLOCKS, alternated, interleaved, set_clock
from reversible import trajectory
from reversible.adam_rule import AdamSchedule

FULL = dict(a_N=10 ** 6, a_steps=12, a_rounds=3, b_T=300, b_reps=3, c_T=2000, c_N=500,
            d_T=1000)
QUICK = dict(a_N=3 * 10 ** 4, a_steps=4, a_rounds=1, b_T=10, b_reps=1, c_T=200, c_N=100, d_T=15)


# ------------------------------------------------------------------- (a)
def bench_step(cfg):
    N, steps, rounds = cfg["a_N"], cfg["a_steps"], cfg["a_rounds"]
    rng = np.random.default_rng(0)
    gs = [rng.standard_normal(N) for _ in range(4)]
    T = steps * rounds * 2 + 8
    sched = AdamSchedule.build(np.full(T, 1e-3), np.full(T, 0.9), np.full(T, 0.999),
                               np.zeros(N, np.int64), 1, 1e-8, 0.01)
    b1, b2, d = float(sched.beta1s[0, 0]), float(sched.beta2s[0, 0]), float(sched.decay[0, 0])
    w0 = rng.standard_normal(N)

    class FloatAdam:
        """AdamW as NumPy code would write it (in place)."""

        def __init__(self):
            self.w, self.m, self.s, self.p1, self.p2 = w0.copy(), np.zeros(N), np.zeros(N), 1.0, 1.0

        def __call__(self, t):
            g = gs[t % 4]
            self.p1 *= b1
            self.p2 *= b2
            self.m *= b1
            self.m += (1 - b1) * g
            self.s *= b2
            self.s += (1 - b2) * g * g
            self.w *= d
            self.w -= (1e-3 / (1 - self.p1)) * self.m / (np.sqrt(self.s / (1 - self.p2)) + 1e-8)

    class ExactAdam:
        def __init__(self, kernel):
            self.rule = sched.rule(kernel)
            self.state = self.rule.start(w0, None, None)
            self.t = 0

        def __call__(self, t):
            self.rule.exact_forward(self.state, gs[t % 4], self.t)
            self.t += 1

    contenders = {"exact Adam, numba kernel": ExactAdam("numba"),
                  "exact Adam, NumPy specification": ExactAdam("numpy")}
    base = FloatAdam()
    base(0)
    ratios = {k: [] for k in contenders}
    seconds = {k: [] for k in ["float64 NumPy AdamW step"] + list(contenders)}
    for _ in range(rounds):
        for name, step in contenders.items():
            step(0)                               # warm up (compile, first allocations)
            reps = steps if "numba" in name else max(2, steps // 3)
            tb, tc = alternated(base, step, reps)
            ratios[name].append(tc / tb)
            seconds[name].append(tc)
            seconds["float64 NumPy AdamW step"].append(tb)
    return dict(N=N, ratio={k: float(np.median(v)) for k, v in ratios.items()},
                seconds={k: float(np.median(v)) for k, v in seconds.items()})


# ------------------------------------------------------------------- (b), (d)
def mlp_problem(T, seed=0):
    from reversible.data import load_digits
    from reversible.models import init_mlp, make_train_loss
    sizes = [64, 50, 50, 10]
    loss = make_train_loss(load_digits(), sizes, 100, seed=seed)
    w0 = init_mlp(sizes, 0.1, seed)
    G = len(w0)
    return loss, w0, np.full((T, G), 1e-3), np.full((T, G), 0.9), np.full((T, G), 0.999)


def plain_adam(loss, w0, alphas, beta1s, beta2s, eps=1e-8):
    """T steps of float64 Adam with ``autograd.grad`` of the same loss (what a user runs)."""
    from autograd import grad
    dloss = grad(loss)
    w = [x.copy() for x in w0]
    m = [np.zeros_like(x) for x in w0]
    s = [np.zeros_like(x) for x in w0]
    p1, p2 = np.ones(len(w0)), np.ones(len(w0))
    for t in range(alphas.shape[0]):
        g = dloss(w, None, t)
        p1, p2 = p1 * beta1s[t], p2 * beta2s[t]
        for i in range(len(w)):
            m[i] = beta1s[t, i] * m[i] + (1 - beta1s[t, i]) * g[i]
            s[i] = beta2s[t, i] * s[i] + (1 - beta2s[t, i]) * g[i] * g[i]
            w[i] = w[i] - alphas[t, i] * (m[i] / (1 - p1[i])) / (np.sqrt(s[i] / (1 - p2[i])) + eps)
    return w


def hypergradient(loss, w0, alphas, beta1s, beta2s, method):
    import autograd

    import reversible
    stats = {}

    def meta(a, b1, b2):
        wT = reversible.adam(loss, w0, a, b1, b2, method=method, stats=stats)
        return loss(wT, None, 10 ** 6)

    return autograd.grad(meta, (0, 1, 2))(alphas, beta1s, beta2s), stats


def second_order_bound(loss, w0, reps=20):
    """``(2 grad + grad_then_hvp) / grad`` in CPU time on the MLP: the exact reverse pass
    recomputes one gradient and one Hessian product per step, the forward pass one gradient."""
    from autograd import grad

    from reversible.adam_api import AdamProblem
    from reversible.structure import Structure
    s = Structure(w0)
    flat = np.asarray(s.flatten(w0))
    G = s.num_groups
    one = np.ones((4, G))
    prob = AdamProblem.from_containers(loss, s, None, w0=flat, v0=None, alphas=one, betas=one * .9,
                                       meta=None, frac_bits=None, beta2s=one * .99, eps=np.ones(G),
                                       weight_decay=one * 0)
    dl = grad(loss)
    u = np.random.default_rng(0).standard_normal(flat.size)
    step = [0]

    def timed(f):
        def run():
            step[0] += 1
            f(step[0] % 50)
        return run
    med, _ = interleaved({"grad": timed(lambda t: dl(w0, None, t)),
                          "grad_then_hvp": timed(lambda t: prob.grad_then_hvp(
                              flat, None, t, lambda g: u + g))}, reps)
    return dict(seconds=med, bound=(med["grad"] + med["grad_then_hvp"]) / med["grad"],
                note="forward: 1 grad; reverse: 1 grad_then_hvp (g and H u in one pass)")


def bench_mlp(cfg):
    T = cfg["b_T"]
    loss, w0, a, b1, b2 = mlp_problem(T)
    hypergradient(loss, w0, a[:3], b1[:3], b2[:3], "exact")        # warm up (compile, caches)
    plain_adam(loss, w0, a[:3], b1[:3], b2[:3])
    med, _ = interleaved({"plain": lambda: plain_adam(loss, w0, a, b1, b2),
                          "exact": lambda: hypergradient(loss, w0, a, b1, b2, "exact")},
                         cfg["b_reps"])
    p, e = med["plain"], med["exact"]
    return dict(T=T, plain_seconds=p, exact_seconds=e, ratio=e / p,
                second_order=second_order_bound(loss, w0))


def bench_bits(cfg):
    T, N = cfg["c_T"], cfg["c_N"]
    rng = np.random.default_rng(1)
    A = rng.standard_normal((N, 8))

    def grad(w, meta, t):
        return A @ (A.T @ w) / N + np.cos(t + np.arange(N))

    rows = []
    for b1, b2, wd in ((0.9, 0.999, 0.0), (0.9, 0.999, 0.01), (0.5, 0.99, 0.1)):
        sched = AdamSchedule.build(np.full(T, 1e-3), np.full(T, b1), np.full(T, b2),
                                   np.zeros(N, np.int64), 1, 1e-8, wd)
        st = trajectory.forward(grad, rng.standard_normal(N), sched)
        got, ideal = st.stats["bits_per_element_step"], st.stats["ideal_bits_per_element_step"]
        rows.append(dict(beta1=b1, beta2=b2, weight_decay=wd, T=T, N=N, bits=got, ideal=ideal,
                         ratio=got / ideal))
    return rows


def bench_memory(cfg):
    T = cfg["d_T"]
    loss, w0, a, b1, b2 = mlp_problem(T)
    hypergradient(loss, w0, a[:3], b1[:3], b2[:3], "exact")
    hypergradient(loss, w0, a[:3], b1[:3], b2[:3], "unrolled")
    out = {}
    for method in ("exact", "unrolled"):
        tracemalloc.start()
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        hypergradient(loss, w0, a, b1, b2, method)
        out[method] = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
    return dict(T=T, peak_bytes=out, ratio=out["exact"] / out["unrolled"])


# ------------------------------------------------------------------- driver
def _row(name, value, target):
    ok = "n/a" if target is None else ("met" if value <= target else "MISSED")
    return f"  {name:<60} {value:>10.4f}  {'' if target is None else f'<= {target}':<9} {ok}"


def report(res):
    lines = ["", "exact Adam benchmarks (ratios measured side by side; busy machines: indicative)",
             ""]
    a = res["a"]
    lines.append(f"(a) one exact Adam step / one float64 NumPy AdamW step, N = {a['N']}")
    for k, v in a["ratio"].items():
        lines.append(_row(k, v, 2.0 if "numba" in k else None))
    b = res["b"]
    lines.append(f"(b) exact Adam hypergradient / plain Adam training, digits MLP, T = {b['T']}")
    lines.append(_row(f"exact {b['exact_seconds']:.2f} s / plain {b['plain_seconds']:.2f} s",
                      b["ratio"], 3.5))
    lines.append(_row("second-order-product bound (grad + grad_then_hvp) / grad",
                      b["second_order"]["bound"], None))
    lines.append("(c) buffer bits per element-step / ideal")
    for r in res["c"]:
        lines.append(_row(f"beta1={r['beta1']} beta2={r['beta2']} wd={r['weight_decay']} "
                          f"({r['bits']:.6f} vs {r['ideal']:.6f})", r["ratio"], 1.001))
    d = res["d"]
    lines.append(f"(d) peak memory exact / unrolled, T = {d['T']}")
    lines.append(_row(f"{d['peak_bytes']['exact'] / 2**20:.1f} MiB / "
                      f"{d['peak_bytes']['unrolled'] / 2**20:.1f} MiB", d["ratio"], None))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (well under a minute)")
    parser.add_argument("--out", default="results/bench_adam.json")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall-clock (default) or process CPU time")
    args = parser.parse_args(argv)
    set_clock(args.clock)
    cfg = QUICK if args.quick else FULL
    res = {"config": cfg, "quick": args.quick, "clock": args.clock}
    res["a"] = bench_step(cfg)
    res["b"] = bench_mlp(cfg)
    res["c"] = bench_bits(cfg)
    res["d"] = bench_memory(cfg)
    text = report(res)
    print(text)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{time.time_ns()}.tmp")
    tmp.write_text(json.dumps(res, indent=2))
    tmp.replace(out)
    return res


if __name__ == "__main__":
    main()
