"""Benchmark of reversible.gpu on one CUDA device (one command; prints a table, writes JSON).

    python benchmarks/bench_gpu.py [--out results.json] [--quick]

Measures
1. device copy bandwidth (bytes read + written of a large device-to-device copy);
2. the exact integrator (one fused kernel per step, gradient given) in element-steps/s and as a
   fraction of the copy bandwidth, from the bytes it must move (forward: W, V, head read and
   written, g read = 56 B/element; reverse: 112 B/element), and its time over a plain float64
   momentum step (40 B/element) on the same GPU;
3. exact hypergradient (exact forward + exact reverse) over plain float64 GPU training for an MLP
   with about 10^7 weights;
4. the speed-up over the CPU engine (reversible.trajectory with the NumPy MLP) on the same problem,
   measured on this machine's CPU with a smaller T and compared per step;
5. one exact Adam step (reversible.gpu.adam_step.DeviceAdam's forward kernel with its per-step
   constants, gradient given, as reversible.gpu.adam runs it) over one float64 CuPy AdamW step
   (one fused elementwise kernel) at N = 10^6 and 10^7, and the exact reverse step (both undo
   kernels) beside it.  ``--adam`` runs only this part (seconds).

Needs CuPy and a CUDA device; without them it exits with status 2 and the install line.
"""

import argparse
import importlib.util
import json
import pathlib
import platform
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import reversible  # noqa: E402

_found = importlib.util.find_spec("reversible.gpu")
if _found is not None and pathlib.Path(_found.origin).resolve().parent == REPO / "gpu":
    import reversible.gpu as rgpu
else:   # not installed, or installed from another checkout: load this checkout's gpu/
    _spec = importlib.util.spec_from_file_location(
        "reversible.gpu", REPO / "gpu" / "__init__.py", submodule_search_locations=[str(REPO / "gpu")])
    rgpu = importlib.util.module_from_spec(_spec)
    sys.modules["reversible.gpu"] = rgpu
    _spec.loader.exec_module(rgpu)

from reversible.adam_rule import AdamSchedule  # noqa: E402
from reversible.buffer import ideal_bits, quantize_beta  # noqa: E402
from reversible.gpu.adam_step import DeviceAdam  # noqa: E402
from reversible.gpu.engine import BLOCK, FWD_KERNELS, NO_ERROR, Engine, _kernels  # noqa: E402
from reversible.gpu.mlp import MLP  # noqa: E402
from reversible.trajectory import Schedule, forward, reverse  # noqa: E402


def timed(cp, fn, reps):
    """Median milliseconds of ``fn()`` over ``reps`` runs, timed with device events (wall clock
    on the CPU emulation, where ``cp`` is NumPy)."""
    out = []
    if cp is np:
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            out.append(1e3 * (time.perf_counter() - t0))
        return float(np.median(out))
    for _ in range(reps):
        a, b = cp.cuda.Event(), cp.cuda.Event()
        a.record()
        fn()
        b.record()
        b.synchronize()
        out.append(cp.cuda.get_elapsed_time(a, b))
    return float(np.median(out))


def copy_bandwidth(cp, nbytes=2 << 30):
    x = cp.random.random(nbytes // 8)
    y = cp.empty_like(x)
    fn = lambda: cp.copyto(y, x)
    fn()
    ms = timed(cp, fn, 20)
    return 2 * x.nbytes / (ms * 1e-3)


def integrator(cp, N, T, beta, bw, reps=3, fwd_kernel=None):
    """Per-step times of the exact forward and reverse kernels (gradient and H u given)."""
    rng = cp.random.default_rng(0)
    w0 = rng.standard_normal(N)
    g = 1e-2 * rng.standard_normal(N)
    hw = 1e-2 * rng.standard_normal(N)
    A = np.full((T, 1), 0.05)
    n = quantize_beta(np.full((T, 1), beta))
    eng = Engine(w0, cp.zeros(N), A, n, None, 40)
    eng.fwd_kernel = fwd_kernel or eng.fwd_kernel
    zeros = cp.zeros(N)

    def run_fwd():
        for t in range(T):
            eng.forward_step(g, t)

    def run_rev():
        eng.reverse_begin(zeros, zeros)
        for t in range(T - 1, -1, -1):
            eng.reverse_step(t, g, hw)

    fwd, rev, exact = [], [], True
    for _ in range(reps + 1):            # the first cycle warms up
        eng.direction = "forward"
        eng.flag[:] = cp.asarray(np.array([NO_ERROR], dtype=np.uint64))
        fwd.append(timed(cp, run_fwd, 1) / T)
        eng.check()
        rev.append(timed(cp, run_rev, 1) / T)
        eng.check()
        exact &= eng.is_back()
    del eng
    fwd_ms, rev_ms = float(np.median(fwd[1:])), float(np.median(rev[1:]))
    # bytes each kernel must move per element: W, V (int64) read+written, g read, head read+written
    # unless beta = 1; reverse also H u read, dw, dv read+written, u and float(w) written
    fwd_bytes, rev_bytes = (40.0, 96.0) if beta == 1.0 else (56.0, 112.0)
    return dict(beta=beta, N=N, T=T, forward_kernel=fwd_kernel or FWD_KERNELS[0],
                forward_ms_per_step=fwd_ms, reverse_ms_per_step=rev_ms,
                forward_element_steps_per_s=N / (fwd_ms * 1e-3),
                reverse_element_steps_per_s=N / (rev_ms * 1e-3),
                forward_fraction_of_copy_bw=fwd_bytes * N / (fwd_ms * 1e-3) / bw,
                reverse_fraction_of_copy_bw=rev_bytes * N / (rev_ms * 1e-3) / bw,
                reversed_exactly=bool(exact))


def plain_step_ms(cp, N, T):
    rng = cp.random.default_rng(1)
    w, v, g = rng.standard_normal(N), cp.zeros(N), 1e-2 * rng.standard_normal(N)
    a, b = cp.full((T, 1), 0.05), cp.full((T, 1), 0.9)
    gid = cp.zeros(1, dtype=cp.int32)
    k = _kernels(cp)["plain_step"]

    def run():
        for t in range(T):
            k(((N + BLOCK - 1) // BLOCK,), (BLOCK,), (w, v, g, a, b, gid, np.int64(N), np.int32(1),
                                                      np.int32(0), np.int32(t)))
    run()
    return timed(cp, run, 3) / T


_PLAIN_ADAMW = None


def plain_adamw(cp):
    """One float64 AdamW step as one fused CuPy kernel (the baseline an exact step is timed against)."""
    global _PLAIN_ADAMW
    if cp is np:                                  # the emulation (tests): the same step in NumPy
        def step(g, alpha, b1, b2, c1, c2, eps, decay, w, m, s):
            m *= b1
            m += (1.0 - b1) * g
            s *= b2
            s += (1.0 - b2) * (g * g)
            w *= decay
            w -= alpha * (m / c1) / (np.sqrt(s / c2) + eps)
        return step
    if _PLAIN_ADAMW is None:
        _PLAIN_ADAMW = cp.ElementwiseKernel(
            "float64 g, float64 alpha, float64 b1, float64 b2, float64 c1, float64 c2, "
            "float64 eps, float64 decay", "float64 w, float64 m, float64 s",
            "m = b1 * m + (1.0 - b1) * g; s = b2 * s + (1.0 - b2) * (g * g); "
            "w = decay * w - alpha * (m / c1) / (sqrt(s / c2) + eps);", "plain_adamw_step")
    return _PLAIN_ADAMW


def adam_step(cp, N, T=20, reps=3, weight_decay=0.01, backend=None):
    """Milliseconds per step: exact Adam forward, its reverse, and a plain float64 AdamW step
    (``backend``: :func:`reversible.gpu.emulate.backend` for a test on the CPU, ``cp`` = NumPy)."""
    rng = cp.random.default_rng(0)
    w0 = rng.standard_normal(N)
    g = 1e-2 * rng.standard_normal(N)
    steps = 1 + reps * T                          # step 0 chooses the moments' formats (one copy)
    sched = AdamSchedule.build(np.full(steps, 1e-3), np.full(steps, 0.9), np.full(steps, 0.999),
                               np.zeros(N, np.int64), 1, 1e-8, weight_decay)
    dev = DeviceAdam(sched, w0, deferred=True, backend=backend)
    dev.forward(g, 0)
    fwd = []
    for r in range(reps):
        def run_fwd(r=r):
            for t in range(1 + r * T, 1 + (r + 1) * T):
                dev.forward(g, t)
        fwd.append(timed(cp, run_fwd, 1) / T)
    rev = []
    for r in reversed(range(reps)):
        def run_rev(r=r):
            for t in range(r * T + T, r * T, -1):
                dev.undo_position(t)
                dev.undo_moments(g, t)
        rev.append(timed(cp, run_rev, 1) / T)
    dev.undo_position(0)
    dev.undo_moments(g, 0)
    launches = [(k, t) for t in range(steps) for k in ("adam_fwd", "adam_undo_position",
                                                       "adam_undo_moments")]
    errors = [e for e in dev.errors(launches) if e is not None]
    exact = not errors and dev.is_back()
    w, m, s = w0.copy(), cp.zeros(N), cp.zeros(N)
    k = plain_adamw(cp)
    b1, b2 = float(sched.beta1s[0, 0]), float(sched.beta2s[0, 0])
    decay = float(sched.decay[0, 0])

    def run_plain():
        for t in range(1, T + 1):
            k(g, 1e-3, b1, b2, 1 - b1 ** t, 1 - b2 ** t, 1e-8, decay, w, m, s)
    run_plain()
    plain = timed(cp, run_plain, reps) / T
    f, r_ = float(np.median(fwd)), float(np.median(rev))
    return dict(N=N, T=T, weight_decay=weight_decay, exact_forward_ms_per_step=f,
                exact_reverse_ms_per_step=r_, plain_adamw_ms_per_step=plain,
                forward_over_plain=f / plain, reverse_over_plain=r_ / plain,
                reversed_exactly=bool(exact), errors=[str(e) for e in errors[:3]])


def mlp_problem(xp, sizes, batch, dtype, n_data=4096, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_data, sizes[0]))
    y = rng.integers(0, sizes[-1], n_data)
    return MLP(sizes, xp.asarray(X), xp.asarray(y), activation="tanh", batch_size=batch, seed=seed,
               dtype=dtype)


def mlp_bench(cp, sizes, batch, T, T_cpu, dtype, reps=3):
    net = mlp_problem(cp, sizes, batch, dtype)
    G = len(net.shapes)
    gi = net.group_index()
    A, B = np.full((T, G), 0.05), np.full((T, G), 0.9)
    w0 = net.init(1.0, seed=1)
    # warm up (compilation, cuBLAS handles)
    rgpu.train_plain(net, w0, A[:3], B[:3], group_index=gi)
    rgpu.sgd(net, w0, A[:3], B[:3], group_index=gi).hypergrad(cp.ones(net.N))
    sync = cp.cuda.Device().synchronize
    plain, fwd, rev = [], [], []
    stats = {}
    for _ in range(reps):                     # interleaved repetitions, medians reported
        sync()
        t0 = time.perf_counter()
        rgpu.train_plain(net, w0, A, B, group_index=gi)
        sync()
        plain.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        run = rgpu.sgd(net, w0, A, B, group_index=gi, stats=stats)
        sync()
        fwd.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        run.hypergrad(cp.ones(net.N), keep=False)
        sync()
        rev.append(time.perf_counter() - t0)
        del run
    plain, fwd, rev = (float(np.median(x)) for x in (plain, fwd, rev))
    out = dict(sizes=sizes, N=net.N, batch=batch, T=T, dtype=str(np.dtype(dtype)), repetitions=reps,
               plain_seconds=plain, exact_forward_seconds=fwd, exact_reverse_seconds=rev,
               exact_over_plain=(fwd + rev) / plain, reversed_exactly=stats.get("reversed_exactly"),
               bits_per_element_step=stats["bits_per_element_step"],
               ideal_bits_per_element_step=float(ideal_bits(quantize_beta(0.9))))
    if T_cpu:
        cnet = mlp_problem(np, sizes, batch, dtype)
        sched = Schedule.build(A[:T_cpu], B[:T_cpu], gi, G)
        w0c = cp.asnumpy(w0)
        t0 = time.perf_counter()
        st = forward(cnet.grad, w0c, sched, None, kernel="auto")
        reverse(st, cnet.vjp, np.ones(cnet.N), kernel="auto")
        cpu = time.perf_counter() - t0
        out.update(cpu_T=T_cpu, cpu_seconds=cpu, cpu_seconds_per_step=cpu / T_cpu,
                   gpu_exact_seconds_per_step=(fwd + rev) / T,
                   speedup_over_cpu=(cpu / T_cpu) / ((fwd + rev) / T))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench_gpu.json")
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    ap.add_argument("--adam", action="store_true", help="only the Adam step rows (seconds)")
    args = ap.parse_args(argv)
    try:
        cp = rgpu.require_cupy()
    except rgpu.GPUUnavailableError as err:
        print(f"bench_gpu.py measures reversible.gpu on a CUDA device and cannot run here: {err}",
              file=sys.stderr)
        raise SystemExit(2) from None
    dev = cp.cuda.Device()
    props = cp.cuda.runtime.getDeviceProperties(dev.id)
    res = dict(device=props["name"].decode(), cupy=cp.__version__, cpu=platform.processor(),
               numpy=np.__version__)
    res["adam_step"] = []
    for N_adam in ((10 ** 5,) if args.quick else (10 ** 6, 10 ** 7)):
        r = adam_step(cp, N_adam, T=5 if args.quick else 20)
        res["adam_step"].append(r)
        print(f"Adam step N={N_adam}: exact forward {r['exact_forward_ms_per_step']:.3f} ms, "
              f"plain float64 AdamW {r['plain_adamw_ms_per_step']:.3f} ms -> "
              f"{r['forward_over_plain']:.2f}x; exact reverse {r['exact_reverse_ms_per_step']:.3f} ms "
              f"({r['reverse_over_plain']:.2f}x); exact={r['reversed_exactly']}", flush=True)
    if args.adam:
        pathlib.Path(args.out).write_text(json.dumps(res, indent=2))
        print(f"wrote {args.out}")
        return res
    N = (1 << 20) if args.quick else (1 << 26)
    T = 10 if args.quick else 40
    bw = copy_bandwidth(cp, (256 << 20) if args.quick else (4 << 30))
    res["copy_bandwidth_GBps"] = bw / 1e9
    plain = plain_step_ms(cp, N, T)
    res["plain_step_ms"] = plain
    res["plain_fraction_of_copy_bw"] = 40.0 * N / (plain * 1e-3) / bw
    res["integrator"] = []
    runs = ([(b, None) for b in (2.0 ** -20, 0.3, 0.5, 0.9, 0.99, 0.9999, 1.0)]
            + [(b, "fwd_step") for b in (0.3, 0.9)])
    for beta, kern in runs:
        r = integrator(cp, N, T, beta, bw, fwd_kernel=kern)
        r["forward_over_plain"] = r["forward_ms_per_step"] / plain
        res["integrator"].append(r)
        print(f"beta={beta} ({r['forward_kernel']}): fwd {r['forward_ms_per_step']:.3f} ms/step "
              f"({r['forward_element_steps_per_s']:.3g} el-steps/s, "
              f"{100 * r['forward_fraction_of_copy_bw']:.0f}% of copy bw, "
              f"{r['forward_over_plain']:.2f}x plain), rev {r['reverse_ms_per_step']:.3f} ms/step "
              f"({100 * r['reverse_fraction_of_copy_bw']:.0f}% of copy bw), exact={r['reversed_exactly']}",
              flush=True)
    sizes = [784, 256, 10] if args.quick else [784, 2048, 2048, 2048, 10]
    res["mlp"] = []
    for dtype, T_cpu in (("float64", 0 if args.quick else 2), ("float32", 0)):
        r = mlp_bench(cp, sizes, 256, 20 if args.quick else 100, T_cpu, dtype)
        res["mlp"].append(r)
        print(f"MLP {r['N']} weights ({dtype}, batch 256, T={r['T']}): plain {r['plain_seconds']:.3f} s, "
              f"exact fwd {r['exact_forward_seconds']:.3f} s + rev {r['exact_reverse_seconds']:.3f} s "
              f"= {r['exact_over_plain']:.2f}x plain; exact={r['reversed_exactly']}; "
              f"{r['bits_per_element_step']:.4f} bits/element-step (ideal {r['ideal_bits_per_element_step']:.4f})"
              + (f"; CPU engine {r['cpu_seconds_per_step']:.3f} s/step -> GPU speed-up "
                 f"{r['speedup_over_cpu']:.0f}x" if 'speedup_over_cpu' in r else ""), flush=True)
    print(f"\ndevice: {res['device']}; copy bandwidth {res['copy_bandwidth_GBps']:.0f} GB/s; plain "
          f"float64 momentum step {plain:.3f} ms for N={N} "
          f"({100 * res['plain_fraction_of_copy_bw']:.0f}% of copy bw)")
    print(f"{'beta':>6} {'kernel':>10} {'fwd el-steps/s':>15} {'fwd %bw':>8} {'fwd/plain':>10} "
          f"{'rev el-steps/s':>15} {'rev %bw':>8}")
    for r in res["integrator"]:
        print(f"{r['beta']:>6} {r['forward_kernel']:>10} {r['forward_element_steps_per_s']:>15.3g} "
              f"{100 * r['forward_fraction_of_copy_bw']:>7.0f}% {r['forward_over_plain']:>10.2f} "
              f"{r['reverse_element_steps_per_s']:>15.3g} {100 * r['reverse_fraction_of_copy_bw']:>7.0f}%")
    pathlib.Path(args.out).write_text(json.dumps(res, indent=2))
    print(f"wrote {args.out}")
    return res


if __name__ == "__main__":
    main()
