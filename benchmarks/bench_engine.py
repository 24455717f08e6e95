"""Engine benchmarks of issue 2, item 11: one command, ratios measured side by side.

    python -m benchmarks.bench_engine            # full sizes (several minutes on 2 cores)
    python -m benchmarks.bench_engine --quick    # small sizes, about a minute

Prints a table of each figure against its target and writes JSON
(``--out``, default ``results/bench_engine.json``):

(a) information-buffer bits per element-step over the ideal ``log2(1/beta)``,
    beta = 0.9 and 0.99, T = 10**4 (target <= 1.001);
(b) one exact integrator step over one float64 NumPy momentum step at
    N = 10**6, for the numba and the NumPy kernels (target <= 1.5 for the
    default path);
(c) per-element-step cost of the exact engine (forward + reverse) at
    T = 10**5 over T = 10**3, same N (target <= 1.1: flat in T);
(d) exact hypergradient (forward + reverse through ``reversible.sgd``) over
    plain float training (T steps of float64 momentum SGD with
    ``autograd.grad`` of the same loss), MLP [64, 50, 50, 10] on digits,
    batch 100, T = 300 (target <= 3.5);
(e) peak traced memory (``tracemalloc``: Python objects and NumPy buffers,
    not the interpreter or imported modules) of ``method="exact"`` over
    ``method="unrolled"`` for the hypergradient of (d) at T = 1000.

Times are CPU times of this process (``time.process_time``), so other jobs
on a shared machine perturb them less than wall time; every timed
comparison interleaves its contenders and reports medians of repeats.
"""

import argparse
import json
import pathlib
import platform
import time
import tracemalloc

import numpy as np

from reversible import kernels, trajectory
from reversible.buffer import InfoBuffer, effective_beta
from reversible.fixedpoint import to_fixed, to_float
from reversible.trajectory import Schedule

FULL = dict(a_T=10_000, a_N=1000,
            b_N=10 ** 6, b_N_cache=250_000, b_steps=30, b_rounds=3,
            c_N=2000, c_T=(1000, 100_000),
            d_T=300, d_reps=3, e_T=1000)
QUICK = dict(a_T=2000, a_N=500,
             b_N=10 ** 6, b_N_cache=250_000, b_steps=10, b_rounds=2,
             c_N=500, c_T=(200, 5000),
             d_T=40, d_reps=2, e_T=100)


def cpu():
    return time.process_time()


# ------------------------------------------------------------ a cheap problem
class Quadratic:
    """``L(w, t) = 0.5 * lam * |w|^2 + <c_t, w>``: gradient and Hessian products in O(N)."""

    def __init__(self, N, seed=0):
        rng = np.random.default_rng(seed)
        self.lam = rng.uniform(0.5, 2.0, N)
        self.c = rng.standard_normal((16, N))     # cycled over t: deterministic in t

    def grad(self, w, meta, t):
        return self.lam * w + self.c[t % 16]

    def vjp(self, w, meta, t, u):
        return self.grad(w, meta, t), self.lam * u, None


def engine_run(N, T, beta, kernel="auto", seed=0, reverse=True):
    """Exact forward (+ reverse) on :class:`Quadratic`; returns (forward stats, fwd s, rev s)."""
    prob = Quadratic(N, seed)
    sched = Schedule.build(np.full(T, 0.05), np.full(T, beta), np.zeros(N, np.int64))
    w0 = np.random.default_rng(seed + 1).standard_normal(N)
    t0 = cpu()
    state = trajectory.forward(prob.grad, w0, sched, kernel=kernel)
    t1 = cpu()
    stats = dict(state.stats)
    if not reverse:
        return stats, t1 - t0, 0.0
    trajectory.reverse(state, prob.vjp, np.ones(N), kernel=kernel)
    t2 = cpu()
    if not state.stats["reversed_exactly"]:
        raise RuntimeError("benchmark run did not reverse exactly")
    return stats, t1 - t0, t2 - t1


# ------------------------------------------------------------------- (a)
def bench_bits(cfg):
    rows = []
    for beta in (0.9, 0.99):
        stats, _, _ = engine_run(cfg["a_N"], cfg["a_T"], beta, reverse=False)
        ideal = float(np.log2(1.0 / effective_beta(beta)))
        rows.append(dict(beta=beta, T=cfg["a_T"], N=cfg["a_N"],
                         bits_per_element_step=stats["bits_per_element_step"],
                         ideal=ideal, ratio=stats["bits_per_element_step"] / ideal,
                         words_per_element_step=stats["buffer_words"] / (cfg["a_N"] * cfg["a_T"])))
    return rows


# ------------------------------------------------------------------- (b)
def bench_step(cfg):
    """(b) at N = 10**6, and at a size whose arrays fit in the L3 cache, for context."""
    out = _bench_step(cfg["b_N"], cfg["b_steps"], cfg["b_rounds"])
    out["in_cache"] = _bench_step(cfg["b_N_cache"], cfg["b_steps"], cfg["b_rounds"],
                                  numpy_kernel=False)
    return out


def _bench_step(N, steps, rounds, F=52, numpy_kernel=True):
    """Median CPU time of one step at size N, contenders interleaved."""
    rng = np.random.default_rng(0)
    gs = [rng.standard_normal(N) for _ in range(4)]
    beta, alpha = 0.9, 0.01
    sched = Schedule.build(np.full(steps, alpha), np.full(steps, beta), np.zeros(N, np.int64))
    b = float(effective_beta(beta))
    w0 = rng.standard_normal(N)

    class FloatStep:
        """``v = beta v - (1 - beta) g; w = w + alpha v`` as NumPy code would write it."""

        def __init__(self, in_place):
            self.w, self.v, self.in_place = w0.copy(), np.zeros(N), in_place

        def __call__(self, t):
            g = gs[t % 4]
            if self.in_place:
                self.v *= b
                self.v -= (1.0 - b) * g
                self.w += alpha * self.v
            else:
                self.v = b * self.v - (1.0 - b) * g
                self.w = self.w + alpha * self.v

    class ExactStep:
        def __init__(self, name, with_float):
            self.k = kernels.get(name)
            self.W, self.V = to_fixed(w0, F), np.zeros(N, np.int64)
            self.buf = InfoBuffer(N)
            self.with_float = with_float

        def __call__(self, t):
            self.W, self.V = self.k.forward_step(self.W, self.V, gs[t % 4], sched.alphas[t],
                                                 sched.n[t], sched, self.buf, F, t)
            if self.with_float:
                to_float(self.W, F)           # the float w the next gradient needs

    contenders = {
        "float64 step (in place)": FloatStep(True),
        "exact numba kernel": ExactStep("numba", False),
        "exact numba kernel + to_float(w)": ExactStep("numba", True),
    }
    if numpy_kernel:
        contenders["exact numpy kernel"] = ExactStep("numpy", False)
    # Each contender is timed in alternation with a float64 baseline step, so a
    # ratio compares two steps run under the same machine load and cache state;
    # the pairings are repeated in `rounds` rounds and the median ratio is reported.
    base_step = FloatStep(False)
    base_step(0)                                  # warm up
    per_round = {k: [] for k in contenders}
    seconds = {k: [] for k in ["float64 step (out of place)"] + list(contenders)}
    for _ in range(rounds):
        for name, step in contenders.items():
            reps = max(4, steps // 3) if name == "exact numpy kernel" else steps
            step(0)                               # warm up (compile, first allocations)
            tb, tc = [], []
            for t in range(reps):
                t0 = cpu()
                base_step(t)
                t1 = cpu()
                step(t)
                t2 = cpu()
                tb.append(t1 - t0)
                tc.append(t2 - t1)
            per_round[name].append(float(np.median(tc) / np.median(tb)))
            seconds[name].append(float(np.median(tc)))
            seconds["float64 step (out of place)"].append(float(np.median(tb)))
    ratio = {k: float(np.median(v)) for k, v in per_round.items()}
    in_place = ratio["float64 step (in place)"]
    return dict(N=N, beta=beta, frac_bits=F, rounds=rounds,
                seconds={k: float(np.median(v)) for k, v in seconds.items()},
                ratio=ratio, ratio_per_round=per_round,
                ratio_vs_in_place={k: v / in_place for k, v in ratio.items()},
                method="each contender alternated step by step with a float64 out-of-place "
                       "step; ratio = median over rounds of median(contender) / "
                       "median(float64), CPU time")


# ------------------------------------------------------------------- (c)
def bench_flat(cfg):
    N = cfg["c_N"]
    engine_run(N, 20, 0.9)                   # warm up: load the compiled reverse kernels
    out = []
    for T in cfg["c_T"]:
        _, fwd, rev = engine_run(N, T, 0.9)
        out.append(dict(T=T, N=N, forward_ns=1e9 * fwd / (N * T), reverse_ns=1e9 * rev / (N * T),
                        total_ns=1e9 * (fwd + rev) / (N * T)))
    short, long_ = out
    return dict(runs=out, ratio=long_["total_ns"] / short["total_ns"],
                ratio_forward=long_["forward_ns"] / short["forward_ns"],
                ratio_reverse=long_["reverse_ns"] / short["reverse_ns"])


# ------------------------------------------------------------------- (d), (e)
def mlp_problem(T, seed=0):
    """Loss, initial weights and schedules of the MLP benchmark."""
    from reversible.data import load_digits
    from reversible.models import init_mlp, make_train_loss
    sizes = [64, 50, 50, 10]
    loss = make_train_loss(load_digits(), sizes, 100, seed=seed)
    w0 = init_mlp(sizes, 0.1, seed)
    G = len(w0)
    return loss, w0, np.full((T, G), 0.1), np.full((T, G), 0.9)


def plain_training(loss, w0, alphas, betas):
    """T steps of float64 momentum SGD with ``autograd.grad`` of the same loss."""
    from autograd import grad
    dloss = grad(loss)
    w = [x.copy() for x in w0]
    v = [np.zeros_like(x) for x in w0]
    for t in range(alphas.shape[0]):
        g = dloss(w, None, t)
        for i in range(len(w)):
            v[i] = betas[t, i] * v[i] - (1.0 - betas[t, i]) * g[i]
            w[i] = w[i] + alphas[t, i] * v[i]
    return w


def hypergradient(loss, w0, alphas, betas, method):
    """``d/d(alphas, betas)`` of the final training loss on a fixed batch, via ``method``."""
    import autograd

    import reversible
    stats = {}

    def meta(a, b):
        wT = reversible.sgd(loss, w0, a, b, method=method, stats=stats)
        return loss(wT, None, 10 ** 6)

    grads = autograd.grad(meta, (0, 1))(alphas, betas)
    return grads, stats


def bench_mlp(cfg):
    loss, w0, alphas, betas = mlp_problem(cfg["d_T"])
    hypergradient(loss, w0, alphas[:3], betas[:3], "exact")          # warm up (compile, caches)
    plain_training(loss, w0, alphas[:3], betas[:3])
    plain, exact, fwd, rev = [], [], [], []
    for _ in range(cfg["d_reps"]):
        t0 = cpu()
        plain_training(loss, w0, alphas, betas)
        plain.append(cpu() - t0)
        t0 = cpu()
        _, stats = hypergradient(loss, w0, alphas, betas, "exact")
        exact.append(cpu() - t0)
        fwd.append(stats["forward_seconds"])
        rev.append(stats["reverse_seconds"])
    p, e = float(np.median(plain)), float(np.median(exact))
    return dict(T=cfg["d_T"], layer_sizes=[64, 50, 50, 10], batch=100, plain_seconds=p,
                exact_seconds=e, ratio=e / p, exact_forward_wall=float(np.median(fwd)),
                exact_reverse_wall=float(np.median(rev)), hvp=_hvp_cost(loss, w0))


def _hvp_cost(loss, w0, reps=40):
    """CPU time of the joint VJP (g, H u) over a plain gradient, per mode, on the MLP."""
    from autograd import grad

    from reversible.problem import Problem
    from reversible.structure import Structure
    s = Structure(w0)
    flat = s.flatten(w0)
    T = 4
    prob = Problem(lambda w, m, t: loss(s.unflatten(w), None, t), flat, flat * 0,
                   np.full((T, s.num_groups), 0.1), np.full((T, s.num_groups), 0.9), None,
                   s.group_index(), 52)
    dl = grad(loss)
    u = np.random.default_rng(0).standard_normal(flat.size)
    fns = {"grad (list params)": lambda t: dl(w0, None, t),
           "grad (flat vector)": lambda t: prob.grad(flat, None, t),
           "vjp forward-over-reverse": lambda t: prob._vjp_forward(flat, None, t, u),
           "vjp reverse-over-reverse": lambda t: prob._vjp_reverse(flat, None, t, u)}
    times = {k: [] for k in fns}
    for r in range(reps):
        for k, f in fns.items():
            t0 = cpu()
            f(r)
            times[k].append(cpu() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    base = med["grad (list params)"]
    return {k: dict(seconds=v, over_grad=v / base) for k, v in med.items()}


def bench_memory(cfg):
    loss, w0, alphas, betas = mlp_problem(cfg["e_T"])
    hypergradient(loss, w0, alphas[:3], betas[:3], "exact")          # imports and caches first
    hypergradient(loss, w0, alphas[:3], betas[:3], "unrolled")
    out = {}
    for method in ("exact", "unrolled"):
        tracemalloc.start()
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        hypergradient(loss, w0, alphas, betas, method)
        out[method] = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
    N = sum(x.size for x in w0)
    return dict(T=cfg["e_T"], N=N, peak_bytes=out, ratio=out["exact"] / out["unrolled"],
                measure="tracemalloc peak above the starting point (Python + NumPy allocations)")


# ------------------------------------------------------------------- driver
def _row(name, value, target, fmt="{:.4f}"):
    ok = "n/a" if target is None else ("met" if value <= target else "MISSED")
    tgt = "" if target is None else f"<= {target}"
    return f"  {name:<58} {fmt.format(value):>10}  {tgt:<9} {ok}"


def report(res):
    lines = ["", "reversible engine benchmarks (ratios measured side by side in this run)", ""]
    if "a" in res:
        lines.append("(a) buffer bits per element-step / ideal log2(1/beta)")
        for r in res["a"]:
            lines.append(_row(f"beta={r['beta']}  T={r['T']}  N={r['N']}  "
                              f"({r['bits_per_element_step']:.6f} vs {r['ideal']:.6f} bits)",
                              r["ratio"], 1.001, "{:.5f}"))
    if "b" in res:
        b = res["b"]
        lines.append(f"(b) one step at N={b['N']:.0e} over a float64 NumPy momentum step "
                     "(out of place), median of rounds")
        for k, v in b["ratio"].items():
            if k.startswith("exact"):
                tgt = 1.5 if k == "exact numba kernel" else None
                rounds = "/".join(f"{r:.2f}" for r in b["ratio_per_round"][k])
                lines.append(_row(f"{k}  ({1e3 * b['seconds'][k]:.2f} ms; rounds {rounds})",
                                  v, tgt, "{:.2f}"))
        sec = b["seconds"]
        oop, inp = sec["float64 step (out of place)"], sec["float64 step (in place)"]
        lines.append(f"      float64 step: {1e3 * oop:.2f} ms out of place, {1e3 * inp:.2f} ms in "
                     f"place; numba kernel {b['ratio_vs_in_place']['exact numba kernel']:.2f}x "
                     "the in-place step")
        c = b["in_cache"]
        lines.append(f"      for context, N={c['N']:.1e} (arrays fit in L3): numba kernel "
                     f"{c['ratio']['exact numba kernel']:.2f}x out of place, "
                     f"{c['ratio_vs_in_place']['exact numba kernel']:.2f}x in place")
    if "c" in res:
        c = res["c"]
        s, l_ = c["runs"]
        lines.append(f"(c) per-element-step cost, T={l_['T']} over T={s['T']} (N={s['N']}, "
                     "forward + reverse)")
        lines.append(_row(f"{l_['total_ns']:.1f} ns vs {s['total_ns']:.1f} ns "
                          f"(fwd x{c['ratio_forward']:.3f}, rev x{c['ratio_reverse']:.3f})",
                          c["ratio"], 1.1, "{:.3f}"))
    if "d" in res:
        d = res["d"]
        lines.append(f"(d) exact hypergradient / plain float training, MLP {d['layer_sizes']}, "
                     f"batch {d['batch']}, T={d['T']}")
        lines.append(_row(f"{d['exact_seconds']:.2f} s vs {d['plain_seconds']:.2f} s CPU",
                          d["ratio"], 3.5, "{:.2f}"))
        for k, v in d["hvp"].items():
            lines.append(f"      {k:<30} {1e3 * v['seconds']:.3f} ms  {v['over_grad']:.2f}x")
    if "e" in res:
        e = res["e"]
        lines.append(f"(e) peak memory exact / unrolled, MLP, T={e['T']} (tracemalloc)")
        lines.append(_row(f"{e['peak_bytes']['exact'] / 2**20:.2f} MiB vs "
                          f"{e['peak_bytes']['unrolled'] / 2**20:.1f} MiB", e["ratio"], None,
                          "{:.4f}"))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    ap.add_argument("--only", default="abcde", help="subset of figures to run, e.g. 'ab'")
    ap.add_argument("--out", default="results/bench_engine.json", help="JSON output path")
    args = ap.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    benches = dict(a=bench_bits, b=bench_step, c=bench_flat, d=bench_mlp, e=bench_memory)
    res = {}
    for key in args.only:
        t0 = time.perf_counter()
        res[key] = benches[key](cfg)
        print(f"[{key} done in {time.perf_counter() - t0:.1f} s]", flush=True)
    print(report(res))
    meta = dict(quick=args.quick, kernel_auto=kernels.get("auto").name,
                machine=platform.machine(), python=platform.python_version(),
                processor=platform.processor(), config=cfg)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(meta=meta, results=res), indent=2))
    print(f"\nwrote {out}")
    return res


if __name__ == "__main__":
    main()
