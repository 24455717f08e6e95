"""Compare the GPU engine with the NumPy specification on random problems.

``python -m reversible.gpu.selfcheck`` runs :func:`compare` over the momentum
regimes on the local GPU and prints whether every state bit agrees.  The test
suites call :func:`compare` too (on the GPU, and on the CPU through
:mod:`reversible.gpu.emulate`).
"""

import sys

import numpy as np

from reversible.trajectory import Schedule, forward, reverse

REGIMES = {
    "tiny": 2.0 ** -20,     # n < 2**16: two 16-bit words spilled per step
    "low": 0.3,             # beta <= 0.5: a word every step or two
    "half": 0.5,            # n = 2**31 exactly
    "high": 0.9,            # 0.5 < beta < 1: a word every ~100 steps
    "near_one": 0.9999,     # the Adam-like momenta the 2**-32 quantum is for
    "identity": 1.0,        # beta = 1: no buffer traffic
    "mixed": None,          # per-group betas from all regimes, changing every step
}


def problem(regime, N, T, seed=0, scale=3.0):
    """A random schedule, start point and gradient table (all NumPy); negative values included."""
    rng = np.random.default_rng(seed)
    if REGIMES[regime] is None:
        G = 4
        gi = np.sort(rng.integers(0, G, N))
        B = rng.choice([2.0 ** -32, 2.0 ** -20, 0.05, 0.3, 0.5 - 2.0 ** -32, 0.5, 0.5 + 2.0 ** -32,
                        0.7, 0.95, 0.999, 0.9999, 1 - 2.0 ** -32, 1.0], size=(T, G))
    else:
        G, gi = 1, None
        B = np.full((T, 1), REGIMES[regime])
    A = rng.uniform(0.01, 0.5, (T, G))
    w0 = rng.standard_normal(N) * scale
    w0[: N // 4] = -np.abs(w0[: N // 4]) * 100     # large negative weights
    v0 = rng.standard_normal(N)
    Z = rng.standard_normal((T, N)) * 10
    c = rng.uniform(0.1, 2.0, T)
    dw = rng.standard_normal(N)
    return dict(A=A, B=B, gi=gi, G=G, w0=w0, v0=v0, Z=Z, c=c, dw=dw)


def compare(regime="fused", N=1000, T=200, frac_bits=40, seed=0, backend=None, check_every=64,
            fwd_kernel=None):
    """Train and reverse with the GPU engine and with NumPy; returns a dict of findings.

    The gradient is ``g_t(w) = c_t * w + z_t`` (two correctly rounded float64
    operations, so both sides see the same bits) and ``H u = c_t * u``.  ``fwd_kernel``
    picks the forward kernel (one of ``engine.FWD_KERNELS``; default the engine's).
    """
    from .front import sgd
    p = problem(regime, N, T, seed)
    xp = np if backend is not None else __import__("cupy")
    Zd = xp.asarray(p["Z"])
    c = p["c"]

    def grad_np(w, m, t):
        return w * c[t] + p["Z"][t]

    def vjp_np(w, m, t, u):
        return grad_np(w, m, t), c[t] * u, None

    def grad_x(w, m, t):
        return w * c[t] + Zd[t]

    def vjp_x(w, m, t, u):
        return grad_x(w, m, t), c[t] * u, None

    gi_full = np.zeros(N, dtype=np.int64) if p["gi"] is None else p["gi"]
    sched = Schedule.build(p["A"], p["B"], gi_full, p["G"])
    st = forward(grad_np, p["w0"], sched, v0=p["v0"], frac_bits=frac_bits, kernel="numpy")
    from . import engine
    saved = engine.FWD_KERNELS
    if fwd_kernel is not None:
        engine.FWD_KERNELS = (fwd_kernel,) + tuple(k for k in saved if k != fwd_kernel)
    try:
        run = sgd(grad_x, xp.asarray(p["w0"]), p["A"], p["B"], vjp=vjp_x, v0=xp.asarray(p["v0"]),
                  frac_bits=frac_bits, group_index=p["gi"], backend=backend, check_every=check_every)
    finally:
        engine.FWD_KERNELS = saved
    assert fwd_kernel is None or run.engine.fwd_kernel == fwd_kernel
    eng = run.engine
    from .engine import host
    head, ptr, tail = eng.buffer_arrays()
    buf = st.buffer
    ref_tail = buf.tail_matrix()
    live = np.arange(ref_tail.shape[0])[:, None] < buf.ptr[None, :]
    out = dict(
        weights_equal=np.array_equal(host(eng.W), st.W),
        velocity_equal=np.array_equal(host(eng.V), st.V),
        heads_equal=np.array_equal(head, buf.head),
        pointers_equal=np.array_equal(ptr, buf.ptr),
        tails_equal=(tail.shape == ref_tail.shape
                     and np.array_equal(np.where(live, tail, 0), np.where(live, ref_tail, 0))),
        max_words=int(ptr.max()), capacity=eng.capacity,
        bits_gpu=run.stats["buffer_bits"], bits_ref=buf.bits(),
    )
    hg = run.hypergrad(p["dw"])
    ref = reverse(st, vjp_np, p["dw"], kernel="numpy")
    rel = lambda a, b: float(np.max(np.abs(host(a) - b)) / max(np.max(np.abs(b)), 1e-300))
    out.update(
        reversed_exactly=bool(run.stats["reversed_exactly"]),
        dw0_equal=np.array_equal(host(hg["w0"]), ref["w0"]),
        dv0_equal=np.array_equal(host(hg["v0"]), ref["v0"]),
        dalpha_rel=rel(hg["alphas"], ref["alphas"]),
        dbeta_rel=rel(hg["betas"], ref["betas"]),
    )
    return out


def division_cases(seed=0, size=20000):
    """Inputs for the kernels' division routines: signed ``V`` over the whole int64 range, and
    ``x < n 2**32`` (the multiply's quotients are below 2**32), weighted to the top of that
    range where float64 estimates are tightest; ``n`` from 1 to ``2**32 - 1``."""
    rng = np.random.default_rng(seed)
    i64 = np.iinfo(np.int64)
    V = np.concatenate([[i64.min, i64.min + 1, -1, 0, 1, i64.max, -65536, 65535, -(1 << 40)],
                        rng.integers(i64.min, i64.max, size, dtype=np.int64, endpoint=True)])
    n = np.where(rng.random(V.size) < 0.5, rng.integers(1, 65537, V.size),
                 rng.integers(1, 1 << 32, V.size)).astype(np.int64)
    n[:12] = [1, 2, 65536, 65535, 3, (1 << 32) - 1, 7, 1 << 24, (1 << 24) + 1, 1 << 31,
              (1 << 31) + 1, (1 << 31) - 1]
    top = n.astype(np.uint64) << np.uint64(32)          # x < n 2**32 <= 2**64 - 2**32
    frac = rng.random(V.size)
    x = np.where(frac < 0.3, top - np.uint64(1) - rng.integers(0, 1 << 20, V.size).astype(np.uint64),
                 (frac * top.astype(np.float64)).astype(np.uint64))
    x = np.minimum(x, top - np.uint64(1))
    x[:12] = top[:12] - np.uint64(1)
    return V, x, n


def check_division(backend=None):
    """Run the kernels' division routines on :func:`division_cases`; True when they agree with NumPy."""
    from .engine import BLOCK, _kernels, host
    V, x, n = division_cases()
    if backend is None:
        import cupy as xp
        k = _kernels(xp)["divmod_check"]
    else:
        xp, k = backend.xp, backend.kernels["divmod_check"]
    Vd, xd, nd = xp.asarray(V), xp.asarray(x), xp.asarray(n)
    inv = xp.asarray(1.0 / n.astype(np.float64))
    q, r = xp.empty_like(Vd), xp.empty_like(Vd)
    xq, xr = xp.empty_like(xd), xp.empty_like(Vd)
    k(((V.size + BLOCK - 1) // BLOCK,), (BLOCK,), (Vd, xd, nd, inv, q, r, xq, xr, np.int64(V.size)))
    nu = n.astype(np.uint64)
    return (np.array_equal(host(q), V // n) and np.array_equal(host(r), V % n)
            and np.array_equal(host(xq), x // nu) and np.array_equal(host(xr), (x % nu).astype(np.int64)))


def main():
    from ._cupy import GPUUnavailableError, require_cupy
    try:
        require_cupy()
    except GPUUnavailableError as err:
        print(f"reversible.gpu self-check: {err}", file=sys.stderr)
        return 2
    ok = check_division()
    print(f"division routine: {'OK' if ok else 'MISMATCH'}")
    for regime in REGIMES:
        res = compare(regime, N=4099, T=300)
        good = all(v for k, v in res.items() if k.endswith("_equal") or k == "reversed_exactly")
        good = good and res["dalpha_rel"] < 1e-12 and res["dbeta_rel"] < 1e-12
        ok &= good
        print(f"{regime:>11}: {'OK' if good else 'MISMATCH'} {res}")
    print("all bit-identical" if ok else "MISMATCH FOUND")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
