"""Engine benchmarks (issue 10): every target printed with met / missed, in one run.

    python -m benchmarks.bench_engine            # full sizes (a few minutes on 2 cores)
    python -m benchmarks.bench_engine --quick    # small sizes, seconds (figures indicative only)
    python -m benchmarks.bench_engine --only bd  # a subset

Every figure times the PUBLIC call a user makes, ``reversible.sgd(...)`` (and
``autograd.grad`` through it), against what the same user would write without
this library, in the same process, contenders interleaved after one untimed
run each, medians of the repetitions.  Wall-clock time by default (a kernel
that uses several cores must be credited for it); ``--clock cpu`` uses process
CPU time, steadier on a shared machine.  The numba compile is triggered once before any
timing and never counted.

(a) information-buffer bits per element-step over the ideal ``log2(1/beta)``
    (effective beta), beta = 0.9 and 0.99, T = 10**4 (target: within 0.1 %,
    i.e. |ratio - 1| <= 0.001);
(b) exact forward training / a plain float64 NumPy momentum loop
    (``v = b*v - (1-b)*g; w = w + a*v`` per parameter group, ``g`` from
    ``autograd.grad`` of the same loss), near-free gradient (a linear loss),
    N = 10**6 in one group and in 100 groups (target <= 1.5 each);
(c) cost per element-step of the exact hypergradient (forward + reverse
    through ``autograd.grad``) at T = 10**5 over T = 10**3 (target <= 1.1);
(d) exact hypergradient (forward + reverse) / plain training, MLP
    [64, 50, 50, 10] on digits, batch 100, T = 300 (target <= 3.5), with the
    second-order-product bound beside it: (one gradient + one Hessian-vector
    product, as the engine computes them) / one gradient, same loss;
(e) context, no target: peak traced memory of ``method="exact"`` over
    ``method="unrolled"`` for the hypergradient of (d) at T = 1000;
(k) context, no target: one exact kernel step / one float64 step at N = 10**6
    (the engine's share of (b)).

Writes JSON (``--out``, default ``results/bench_engine.json``) with the raw
figures and a ready table (``table``: columns, rows, source) for the docs.
"""

import argparse
import json
import pathlib
import platform
import time
import tracemalloc

import autograd
import autograd.numpy as anp
import numpy as np

import reversible
from reversible import kernels
from reversible.buffer import InfoBuffer, effective_beta
from reversible.fixedpoint import to_fixed, to_float
from reversible.trajectory import Schedule

FULL = dict(a_T=10_000, a_N=1000,
            b_N=10 ** 6, b_T=30, b_reps=5,
            c_N=2000, c_T=(1000, 100_000), c_reps=5,
            d_T=300, d_reps=3, d_hvp_reps=40,
            e_T=1000,
            k_N=10 ** 6, k_steps=30, k_rounds=3)
QUICK = dict(a_T=400, a_N=200,
             b_N=20_000, b_T=4, b_reps=2,
             c_N=200, c_T=(20, 200), c_reps=2,
             d_T=6, d_reps=1, d_hvp_reps=3,
             e_T=10,
             k_N=20_000, k_steps=4, k_rounds=1)

TARGETS = {"a": 0.001, "b": 1.5, "c": 1.1, "d": 3.5}
MEASURE = {"a": "deviation"}          # the figure each target bounds (default: "ratio")


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = [time.perf_counter]


def clock():
    return _clock[0]()


def set_clock(name):
    """Time with ``name`` (a key of :data:`CLOCKS`) from now on; shared by the benchmarks."""
    _clock[0] = CLOCKS[name]


def interleaved(contenders, reps):
    """Median time of each contender, run in turn ``reps`` times (same load for all),
    after one untimed run of each (first allocations, caches, thread pools)."""
    for run in contenders.values():
        run()
    times = {name: [] for name in contenders}
    for _ in range(reps):
        for name, run in contenders.items():
            t0 = clock()
            run()
            times[name].append(clock() - t0)
    return {name: float(np.median(v)) for name, v in times.items()}, times


def alternated(base, contender, steps):
    """Median times of ``base(t)`` and ``contender(t)`` run in turn for ``t = 0 .. steps-1``:
    one step of each after the other, so both see the same load, caches and step data."""
    tb, tc = [], []
    for t in range(steps):
        t0 = clock()
        base(t)
        t1 = clock()
        contender(t)
        t2 = clock()
        tb.append(t1 - t0)
        tc.append(t2 - t1)
    return float(np.median(tb)), float(np.median(tc))


def plain_momentum(loss, w0, alphas, betas):
    """What a user writes without this library: float64 momentum SGD, ``autograd.grad``."""
    dloss = autograd.grad(loss)
    single = not isinstance(w0, (list, tuple))
    w = [w0.copy()] if single else [x.copy() for x in w0]
    v = [np.zeros_like(x) for x in w]
    a2 = np.reshape(alphas, (len(alphas), -1))
    b2 = np.reshape(betas, (len(betas), -1))
    for t in range(a2.shape[0]):
        g = dloss(w[0] if single else w, None, t)
        g = [g] if single else g
        for i in range(len(w)):
            a, b = a2[t, i % a2.shape[1]], b2[t, i % b2.shape[1]]
            v[i] = b * v[i] - (1.0 - b) * g[i]
            w[i] = w[i] + a * v[i]
    return w[0] if single else w


def linear_problem(N, G, seed=0):
    """A near-free gradient: ``L(w, t) = sum_i <c_(t mod 4), w_i>`` over G groups of N / G."""
    rng = np.random.default_rng(seed)
    n = N // G
    cs = [[rng.standard_normal(n) for _ in range(G)] for _ in range(4)]
    w0 = [0.1 * rng.standard_normal(n) for _ in range(G)]
    if G == 1:
        def loss(w, meta, t):
            return anp.dot(w, cs[t % 4][0])
        return loss, w0[0]

    def loss(w, meta, t):
        c = cs[t % 4]
        return sum(anp.dot(w[i], c[i]) for i in range(G))
    return loss, w0


def quadratic_problem(N, seed=0, curvature=1.0):
    """``L(w, t) = 0.5 <lam, w^2> + <c_(t mod 16), w>``: gradient and Hessian products in O(N).

    ``lam`` is uniform in ``curvature * [0.5, 2]``; the ``c`` have mean zero over their cycle,
    so ``w`` stays bounded even when the curvature is weak.
    """
    rng = np.random.default_rng(seed)
    lam = curvature * rng.uniform(0.5, 2.0, N)
    cs = rng.standard_normal((16, N))
    cs -= cs.mean(axis=0)

    def loss(w, meta, t):
        return 0.5 * anp.dot(lam, w * w) + anp.dot(cs[t % 16], w)
    return loss, rng.standard_normal(N)


def warm_up():
    """Compile (or load) the numba kernels and autograd paths before anything is timed."""
    loss, w0 = quadratic_problem(64)
    autograd.grad(lambda a: anp.sum(reversible.sgd(loss, w0, a, np.full(3, 0.9))))(np.full(3, 0.1))


# ------------------------------------------------------------------- (a)
def bench_bits(cfg):
    rows = []
    loss, w0 = quadratic_problem(cfg["a_N"])
    T = cfg["a_T"]
    for beta in (0.9, 0.99):
        stats = {}
        reversible.sgd(loss, w0, np.full(T, 0.05), np.full(T, beta), stats=stats)
        ideal = float(np.log2(1.0 / effective_beta(beta)))
        rows.append(dict(beta=beta, T=T, N=cfg["a_N"],
                         bits_per_element_step=stats["bits_per_element_step"],
                         ideal=ideal, ratio=stats["bits_per_element_step"] / ideal))
    worst = max(rows, key=lambda r: abs(r["ratio"] - 1))
    return dict(rows=rows, ratio=worst["ratio"], deviation=abs(worst["ratio"] - 1))


# ------------------------------------------------------------------- (b)
def bench_forward(cfg):
    N, T = cfg["b_N"], cfg["b_T"]
    out = {}
    for G in (1, 100):
        loss, w0 = linear_problem(N, G)
        alphas, betas = np.full(T, 0.01), np.full(T, 0.9)
        contenders = {"plain": lambda: plain_momentum(loss, w0, alphas, betas),
                      "exact": lambda: reversible.sgd(loss, w0, alphas, betas)}
        med, raw = interleaved(contenders, cfg["b_reps"])
        out[f"G={G}"] = dict(N=N, G=G, T=T, plain_seconds=med["plain"], exact_seconds=med["exact"],
                             ratio=med["exact"] / med["plain"],
                             ratio_per_rep=[e / p for e, p in zip(raw["exact"], raw["plain"])])
    out["ratio"] = max(r["ratio"] for r in out.values())
    return out


# ------------------------------------------------------------------- (c)
def _hypergradient_call(loss, w0, T):
    alphas, betas = np.full(T, 0.02), np.full(T, 0.9)

    def run():
        autograd.grad(lambda a: anp.sum(reversible.sgd(loss, w0, a, betas) ** 2))(alphas)
    return run


def bench_flat(cfg):
    N = cfg["c_N"]
    # weak curvature: with lam ~ 1 the cotangents contract by ~e^-0.2 per step and, after a few
    # thousand steps, are subnormal floats, whose arithmetic is ~10x slower on x86: that would time
    # the FPU's subnormal path, not the engine.  At 1e-4 they stay normal up to T = 10^5.
    loss, w0 = quadratic_problem(N, curvature=1e-4)
    short, long_ = cfg["c_T"]
    run_short = _hypergradient_call(loss, w0, short)
    run_long = _hypergradient_call(loss, w0, long_)
    times = []
    t_short = []
    for i in range(cfg["c_reps"]):            # the long run once, between repeats of the short
        t0 = clock()
        run_short()
        t_short.append(clock() - t0)
        if i == cfg["c_reps"] // 2:
            t0 = clock()
            run_long()
            times.append(clock() - t0)
    s = float(np.median(t_short)) / (N * short)
    lng = times[0] / (N * long_)
    return dict(N=N, T=[short, long_], ns_per_element_step=[1e9 * s, 1e9 * lng], ratio=lng / s)


# ------------------------------------------------------------------- (d), (e)
def mlp_problem(T, seed=0):
    """Loss, initial weights (6 groups) and schedules of the MLP benchmark."""
    from reversible.data import load_digits
    from reversible.models import init_mlp, make_train_loss
    sizes = [64, 50, 50, 10]
    loss = make_train_loss(load_digits(), sizes, 100, seed=seed)
    w0 = init_mlp(sizes, 0.1, seed)
    G = len(w0)
    return loss, w0, np.full((T, G), 0.1), np.full((T, G), 0.9)


def hypergradient(loss, w0, alphas, betas, method):
    """``d/d(alphas, betas)`` of the training loss of ``w_T`` on a fixed batch, via ``method``."""
    stats = {}

    def meta(a, b):
        return loss(reversible.sgd(loss, w0, a, b, method=method, stats=stats), None, 10 ** 6)

    return autograd.grad(meta, (0, 1))(alphas, betas), stats


def bench_mlp(cfg):
    loss, w0, alphas, betas = mlp_problem(cfg["d_T"])
    contenders = {"plain": lambda: plain_momentum(loss, w0, alphas, betas),
                  "exact": lambda: hypergradient(loss, w0, alphas, betas, "exact")}
    med, raw = interleaved(contenders, cfg["d_reps"])
    return dict(T=cfg["d_T"], layer_sizes=[64, 50, 50, 10], batch=100,
                plain_seconds=med["plain"], exact_seconds=med["exact"],
                ratio=med["exact"] / med["plain"],
                ratio_per_rep=[e / p for e, p in zip(raw["exact"], raw["plain"])],
                bound=_second_order_bound(loss, w0, cfg["d_hvp_reps"]))


def _second_order_bound(loss, w0, reps):
    """(gradient + Hessian-vector product) / gradient on the MLP loss, as the engine calls them.

    The reverse pass needs one gradient-and-HVP per step where plain training
    needs one gradient, so this ratio bounds exact / plain from below (up to the
    float update, which plain training also pays).
    """
    from reversible.inputs import sgd_inputs
    prob = sgd_inputs(loss, w0, np.full(2, 0.1), np.full(2, 0.9)).problem
    u = np.random.default_rng(0).standard_normal(prob.N)
    dloss = autograd.grad(loss)
    calls = {"grad": lambda t: dloss(w0, None, t),
             "grad + HVP": lambda t: prob.vjp(prob.w0, None, t, u)}
    times = {k: [] for k in calls}
    for r in range(reps):
        for k, f in calls.items():
            t0 = clock()
            f(r)
            times[k].append(clock() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    mode = "reverse-over-reverse" if prob.hvp == "reverse" else "forward-over-reverse"
    return dict(seconds=med, hvp_mode=mode, ratio=(med["grad"] + med["grad + HVP"]) / med["grad"])


def bench_memory(cfg):
    loss, w0, alphas, betas = mlp_problem(cfg["e_T"])
    out = {}
    for method in ("exact", "unrolled"):
        hypergradient(loss, w0, alphas[:3], betas[:3], method)        # imports and caches first
        tracemalloc.start()
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        hypergradient(loss, w0, alphas, betas, method)
        out[method] = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
    return dict(T=cfg["e_T"], peak_bytes=out, ratio=out["exact"] / out["unrolled"])


# ------------------------------------------------------------------- (k)
def bench_kernel_step(cfg):
    """One exact kernel step against one float64 step, alternated step by step."""
    N, steps = cfg["k_N"], cfg["k_steps"]
    rng = np.random.default_rng(0)
    gs = [rng.standard_normal(N) for _ in range(4)]
    beta, alpha, F = 0.9, 0.01, 52
    sched = Schedule.build(np.full(steps, alpha), np.full(steps, beta), np.zeros(N, np.int64))
    b = float(effective_beta(beta))
    w, v = rng.standard_normal(N), np.zeros(N)
    kernel = kernels.get("auto")
    state = dict(W=to_fixed(w, F), V=np.zeros(N, np.int64), buf=InfoBuffer(N))

    def float_step(t):
        nonlocal w, v
        v = b * v - (1.0 - b) * gs[t % 4]
        w = w + alpha * v

    def exact_step(t):
        state["W"], state["V"] = kernel.forward_step(state["W"], state["V"], gs[t % 4],
                                                     sched.alphas[t], sched.n[t], sched,
                                                     state["buf"], F, t)
        to_float(state["W"], F)                  # the float weights the next gradient needs

    ratios = []
    for _ in range(cfg["k_rounds"]):
        tf, te = alternated(float_step, exact_step, steps)
        ratios.append(te / tf)
    return dict(N=N, kernel=kernel.name, ratio=float(np.median(ratios)), ratio_per_round=ratios)


# ------------------------------------------------------------------- driver
BENCHES = dict(a=bench_bits, b=bench_forward, c=bench_flat, d=bench_mlp, e=bench_memory,
               k=bench_kernel_step)


def measured(key, result):
    return result[MEASURE.get(key, "ratio")]


def _verdict(key, value):
    target = TARGETS.get(key)
    if target is None:
        return "-", None
    return ("met" if value <= target else "MISSED"), target


def table(res, quick):
    """Rows (label, figure, measured, target) for the report and the docs."""
    rows = []

    def add(key, figure, text):
        verdict, target = _verdict(key, measured(key, res[key]))
        bound = "|ratio - 1| " if MEASURE.get(key) == "deviation" else ""
        rows.append([f"({key})", figure, text,
                     "-" if target is None else f"{bound}<= {target}: {verdict}".lstrip()])

    if "a" in res:
        r = res["a"]["rows"]
        add("a", f"buffer bits per element-step / ideal log2(1/beta), T = {r[0]['T']}, "
                 f"N = {r[0]['N']}",
            ", ".join(f"{x['ratio']:.5f} (beta {x['beta']}: {x['bits_per_element_step']:.6f} vs "
                      f"{x['ideal']:.6f})" for x in r))
    if "b" in res:
        b = res["b"]
        g1, g100 = b["G=1"], b["G=100"]
        add("b", f"exact forward / plain float64 momentum loop, near-free gradient, "
                 f"N = {g1['N']:.0e}, T = {g1['T']}, 1 and 100 groups (worst shown first)",
            f"{b['ratio']:.2f} (1 group: {g1['ratio']:.2f}, {g1['exact_seconds']:.3f} s vs "
            f"{g1['plain_seconds']:.3f} s; 100 groups: {g100['ratio']:.2f}, "
            f"{g100['exact_seconds']:.3f} s vs {g100['plain_seconds']:.3f} s)")
    if "c" in res:
        c = res["c"]
        add("c", f"cost per element-step of the exact hypergradient, T = {c['T'][1]} over "
                 f"T = {c['T'][0]}, N = {c['N']}",
            f"{c['ratio']:.3f} ({c['ns_per_element_step'][1]:.1f} ns vs "
            f"{c['ns_per_element_step'][0]:.1f} ns)")
    if "d" in res:
        d = res["d"]
        bd = d["bound"]
        add("d", f"exact hypergradient / plain training, MLP {d['layer_sizes']}, batch "
                 f"{d['batch']}, T = {d['T']}",
            f"{d['ratio']:.2f} ({d['exact_seconds']:.2f} s vs {d['plain_seconds']:.2f} s); "
            f"second-order bound (grad + HVP) / grad = {bd['ratio']:.2f} "
            f"({1e3 * bd['seconds']['grad']:.2f} ms + {1e3 * bd['seconds']['grad + HVP']:.2f} ms, "
            f"{bd['hvp_mode']})")
    if "e" in res:
        e = res["e"]
        add("e", f"peak memory exact / unrolled, MLP hypergradient, T = {e['T']} (tracemalloc)",
            f"{e['ratio']:.4f} ({e['peak_bytes']['exact'] / 2**20:.2f} MiB vs "
            f"{e['peak_bytes']['unrolled'] / 2**20:.1f} MiB)")
    if "k" in res:
        k = res["k"]
        add("k", f"one exact kernel step (+ to_float of w) / one float64 step, N = {k['N']:.0e} "
                 f"({k['kernel']})",
            f"{k['ratio']:.2f} (rounds {'/'.join(f'{r:.2f}' for r in k['ratio_per_round'])})")
    clock_name = next(k for k, v in CLOCKS.items() if v is _clock[0])
    source = ("`python -m benchmarks.bench_engine" + (" --quick" if quick else "")
              + ("" if clock_name == "wall" else f" --clock {clock_name}") + "`"
              + f" on {platform.machine()} with {_cpus()} CPUs, {clock_name} time, medians of "
              "interleaved repetitions")
    return dict(columns=["", "figure", "measured", "target"], rows=rows, source=source)


def _cpus():
    import os
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def report(tab, quick):
    lines = ["", "reversible engine benchmarks: issue 10 targets, ratios measured side by side "
             "in this run" + (" (QUICK sizes: indicative only)" if quick else ""), ""]
    for label, figure, measured, target in tab["rows"]:
        lines.append(f"{label} {figure}")
        lines.append(f"      {measured}")
        lines.append(f"      target {target}" if target != "-" else "      (context, no target)")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (seconds; indicative only)")
    ap.add_argument("--only", default="".join(BENCHES), help="subset of figures, e.g. 'bd'")
    ap.add_argument("--out", default="results/bench_engine.json", help="JSON output path")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                    help="wall (default: credits kernels that use several cores) or cpu "
                         "(process CPU time: steadier on a shared machine, but sums threads)")
    args = ap.parse_args(argv)
    set_clock(args.clock)
    unknown = sorted(set(args.only) - set(BENCHES))
    if unknown:
        ap.error(f"unknown figure(s) {unknown}; choose from {''.join(BENCHES)}")
    cfg = QUICK if args.quick else FULL
    warm_up()
    res = {}
    for key in args.only:
        t0 = clock()
        res[key] = BENCHES[key](cfg)
        print(f"[{key} done in {clock() - t0:.1f} s]", flush=True)
    tab = table(res, args.quick)
    print(report(tab, args.quick))
    meta = dict(quick=args.quick, clock=args.clock, kernel_auto=kernels.get("auto").name,
                cpus=_cpus(),
                machine=platform.machine(), python=platform.python_version(), config=cfg)
    met = {k: _verdict(k, measured(k, res[k]))[0] for k in res if k in TARGETS}
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(meta=meta, results=res, targets=TARGETS, verdicts=met,
                                   table=tab), indent=1))
    print(f"\nwrote {out}")
    return res


if __name__ == "__main__":
    main()
