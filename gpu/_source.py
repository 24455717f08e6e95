"""CUDA C source of the exact momentum kernels (compiled by CuPy at first use).

The integer semantics are those of :mod:`reversible.buffer` and
:mod:`reversible.kernels`, bit for bit: beta = ``n / 2**32``; the multiply
pops ``u = head mod n``, forms ``X = V n + u`` in 32-bit limbs, keeps
``floor(X / 2**32)`` and pushes ``X mod 2**32`` into the head, after spilling
16-bit words while ``head >= n 2**32`` (identity for ``n == 2**32``);
``to_fixed(x) = rint(x * 2**F)`` with range checks, floor division and modulo
for negative values, float64 products rounded one at a time (``__dmul_rn`` and
``--fmad=false``: no fused multiply-add).

Each thread owns its elements' head, pointer and tail column; the tail is a
dense ``uint16[capacity, N]`` array.  Nothing is synchronised with the host:
a failure is recorded in ``flag[0]`` with ``atomicMin`` of a key
``seq << 8 | rank << 4 | code`` (earliest operation first, then the check the
NumPy engine makes first), and the host reads the flag now and then.
"""

# error codes (low 4 bits of a key); see reversible.gpu.engine for the messages
CODE_NONFINITE_G = 1
CODE_UNDERFLOW = 2
CODE_CAPACITY = 3
CODE_GRADSTEP = 4
CODE_VELOCITY = 5
CODE_WSTEP_NONFINITE = 6
CODE_WSTEP = 7
CODE_WEIGHTS = 8
CODE_NONFINITE_HVP = 9
CODE_UNDO_OVERFLOW = 10

SOURCE = r"""
typedef long long i64;
typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned short u16;

#define HEAD_LOW  (1ULL << 48)
#define BETA_ONE  4294967296LL
#define TWO63     9223372036854775808.0
#define INV_BETA_ONE 2.3283064365386962890625e-10
#define MASK32    0xFFFFFFFFULL

__device__ __forceinline__ void report(u64* flag, u64 key, u64 rank, u64 code) {
    atomicMin(flag, key | (rank << 4) | code);
}

/* rint(x * scale) into *out; 0 ok, 1 non-finite, 2 out of the int64 range */
__device__ __forceinline__ int to_fixed(double x, double scale, i64* out) {
    if (!isfinite(x)) { *out = 0; return 1; }
    double r = rint(__dmul_rn(x, scale));
    if (fabs(r) >= TWO63) { *out = 0; return 2; }
    *out = (i64)r;
    return 0;
}

__device__ __forceinline__ double to_float(i64 X, double inv_scale) {
    return __dmul_rn(__ll2double_rn(X), inv_scale);
}

/* X + D (or X - D) with the wrap-around test of reversible.fixedpoint.checked_add */
__device__ __forceinline__ bool add_checked(i64 X, i64 D, bool sub, i64* S) {
    u64 ux = (u64)X, ud = (u64)D;
    i64 s = sub ? (i64)(ux - ud) : (i64)(ux + ud);
    i64 deff = sub ? (i64)(0ULL - ud) : D;
    bool wrapped = ((X ^ s) & (deff ^ s)) < 0;
    if (sub && D == (i64)0x8000000000000000ULL) wrapped = true;
    *S = s;
    return !wrapped;
}

/* correct a quotient estimate q that is off by at most one, given its remainder r */
__device__ __forceinline__ void fixup(i64* q, i64* r, i64 n) {
    if (*r < 0) { *q -= 1; *r += n; }
    else if (*r >= n) { *q += 1; *r -= n; }
}

/* x = q n + r for x < n 2**32 (so q < 2**32) and 1 <= n < 2**32: a float64 estimate
   (error far below one) fixed up exactly by the remainder; inv_n = 1.0 / n */
__device__ __forceinline__ u64 quot32(u64 x, i64 n, double inv_n, i64* r) {
    i64 q = (i64)(u64)__dmul_rn(__ull2double_rn(x), inv_n);
    i64 rem = (i64)(x - (u64)q * (u64)n);               /* |x - q n| < 2 n: exact mod 2**64 */
    fixup(&q, &rem, n);
    *r = rem;
    return (u64)q;
}

/* floor division and modulo of a signed V by 1 <= n < 2**32 without an integer division:
   a float64 estimate when the quotient is below 2**32 (n > 2**31), else long division in
   32-bit limbs V = Vh 2**32 + Vl (|Vh| < 2**31); inv_n = 1.0 / n */
__device__ __forceinline__ void floordivmod(i64 V, i64 n, double inv_n, i64* q, i64* r) {
    if (n > 2147483648LL) {
        i64 a = (i64)floor(__dmul_rn(__ll2double_rn(V), inv_n));
        i64 b = (i64)((u64)V - (u64)a * (u64)n);        /* exact mod 2**64 */
        fixup(&a, &b, n);
        *q = a; *r = b;
        return;
    }
    i64 vh = V >> 32;
    i64 a1 = (i64)floor(__dmul_rn(__ll2double_rn(vh), inv_n));
    i64 r1 = vh - a1 * n;
    fixup(&a1, &r1, n);
    u64 c = quot32((((u64)r1) << 32) | ((u64)V & MASK32), n, inv_n, r);
    *q = (i64)((((u64)a1) << 32) + c);
}

/* self-test entry point: floor divmod of V by n, and x // n, x % n for x < n 2**32 */
extern "C" __global__ void divmod_check(const i64* V, const u64* x, const i64* n, const double* inv,
                                        i64* q, i64* r, u64* xq, i64* xr, i64 N) {
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N) return;
    floordivmod(V[i], n[i], inv[i], q + i, r + i);
    xq[i] = quot32(x[i], n[i], inv[i], xr + i);
}

struct Tail {
    u16* tail; int* ptr; i64 N; i64 cap; i64 i;   /* ptr is read only on a push or a pop */
};

__device__ __forceinline__ void push(const Tail& tl, u64 word, bool* cap_err) {
    int p = tl.ptr[tl.i];
    if ((i64)p >= tl.cap) { *cap_err = true; return; }
    tl.tail[(i64)p * tl.N + tl.i] = (u16)(word & 0xFFFFULL);
    tl.ptr[tl.i] = p + 1;
}

__device__ __forceinline__ u64 pop(const Tail& tl, bool* under) {
    int p = tl.ptr[tl.i];
    if (p <= 0) { *under = true; return 0ULL; }
    tl.ptr[tl.i] = p - 1;
    return (u64)tl.tail[(i64)(p - 1) * tl.N + tl.i];
}

/* V n / 2**32 to within one unit (n < 2**32): spill 16-bit words while head >= n 2**32,
   pop u = head mod n, X = V n + u (limbs: V = Vh 2**32 + Vl), push X mod 2**32 */
__device__ __forceinline__ i64 bb_multiply(i64 V, i64 n, double inv_n, u64* hp,
                                           const Tail& tl, bool* cap_err) {
    u64 h = *hp;
    u64 limit = ((u64)n) << 32;
    if (h >= limit) {
        push(tl, h, cap_err);
        h >>= 16;
        if (h >= limit) {                               /* n < 2**16: a second word */
            push(tl, h, cap_err);
            h >>= 16;
        }
    }
    i64 u;
    u64 q = quot32(h, n, inv_n, &u);
    u64 P = ((u64)V & MASK32) * (u64)n + (u64)u;      /* < 2**64 */
    *hp = (q << 32) | (P & MASK32);
    return (V >> 32) * n + (i64)(P >> 32);
}

/* exact inverse of bb_multiply; *ovf when the velocity would leave int64 */
__device__ __forceinline__ i64 bb_divide(i64 V1, i64 n, double inv_n, u64* hp,
                                         const Tail& tl, bool* under, bool* ovf) {
    u64 h = *hp;
    i64 a, b, u;
    floordivmod(V1, n, inv_n, &a, &b);                  /* V1 = a n + b */
    u64 c = quot32((((u64)b) << 32) | (h & MASK32), n, inv_n, &u);
    if (a < -(1LL << 31) || a >= (1LL << 31)) *ovf = true;
    h = (h >> 32) * (u64)n + (u64)u;
    if (h < HEAD_LOW) {
        h = (h << 16) | pop(tl, under);
        if (h < HEAD_LOW) h = (h << 16) | pop(tl, under);
    }
    *hp = h;
    return (i64)((((u64)a) << 32) + c);
}

/* The forward step of element i on values held in registers (loads and stores by the caller):
   V <- n/2**32 V - fix((1 - beta) g);  W <- W + fix(alpha * V). */
__device__ __forceinline__ void fwd_core(
    i64 i, i64* Wi, i64* Vi, u64* h, double gi, i64 k, int* ptr, u16* tail,
    const double* alphas, const i64* ns, const double* invs,
    i64 N, i64 cap, double scale, double inv_scale, u64 key, u64* flag)
{
    i64 n = ns[k];
    i64 V = *Vi;
    if (!isfinite(gi)) report(flag, key, 1, 1);
    if (n < BETA_ONE) {
        Tail tl = {tail, ptr, N, cap, i};
        bool cap_err = false;
        V = bb_multiply(V, n, invs[k], h, tl, &cap_err);
        if (cap_err) report(flag, key, 3, 3);
    }
    double omb = (double)(BETA_ONE - n) * INV_BETA_ONE;
    i64 D;
    int e = to_fixed(__dmul_rn(omb, gi), scale, &D);
    if (e == 2) report(flag, key, 4, 4);
    if (!add_checked(V, D, true, &V)) report(flag, key, 5, 5);
    double vf = to_float(V, inv_scale);
    e = to_fixed(__dmul_rn(alphas[k], vf), scale, &D);
    if (e == 1) report(flag, key, 6, 6);
    if (e == 2) report(flag, key, 7, 7);
    i64 W = *Wi;
    if (!add_checked(W, D, false, &W)) report(flag, key, 8, 8);
    *Wi = W;
    *Vi = V;
}

/* One forward step t, one element per thread; writes float(W) into wf if has_wf. */
extern "C" __global__ void fwd_step(
    i64* W, i64* V, u64* head, int* ptr, u16* tail, double* wf,
    const double* g, const double* alphas, const i64* ns, const double* invs,
    const int* gidx, i64 N, int G, int has_gidx, int has_wf, int t, i64 cap,
    double scale, double inv_scale, u64 key, u64* flag)
{
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N) return;
    i64 k = (i64)t * G + (has_gidx ? gidx[i] : 0);
    i64 Wi = W[i], Vi = V[i];
    bool buf = ns[k] < BETA_ONE;
    u64 h = buf ? head[i] : 0ULL;
    fwd_core(i, &Wi, &Vi, &h, g[i], k, ptr, tail, alphas, ns, invs, N, cap, scale,
             inv_scale, key, flag);
    W[i] = Wi;
    V[i] = Vi;
    if (buf) head[i] = h;
    if (has_wf) wf[i] = to_float(Wi, inv_scale);
}

/* The same step, two consecutive elements per thread with 16-byte loads and stores of
   W, V, head and wf (these arrays must be 16-byte aligned; g and gidx may be any views). */
extern "C" __global__ void fwd_step2(
    i64* W, i64* V, u64* head, int* ptr, u16* tail, double* wf,
    const double* g, const double* alphas, const i64* ns, const double* invs,
    const int* gidx, i64 N, int G, int has_gidx, int has_wf, int t, i64 cap,
    double scale, double inv_scale, u64 key, u64* flag)
{
    i64 i = ((i64)blockIdx.x * blockDim.x + threadIdx.x) * 2;
    if (i >= N) return;
    if (i + 1 >= N) {                                   /* odd N: the last element alone */
        i64 k = (i64)t * G + (has_gidx ? gidx[i] : 0);
        i64 Wi = W[i], Vi = V[i];
        bool buf = ns[k] < BETA_ONE;
        u64 h = buf ? head[i] : 0ULL;
        fwd_core(i, &Wi, &Vi, &h, g[i], k, ptr, tail, alphas, ns, invs, N, cap, scale,
                 inv_scale, key, flag);
        W[i] = Wi; V[i] = Vi;
        if (buf) head[i] = h;
        if (has_wf) wf[i] = to_float(Wi, inv_scale);
        return;
    }
    i64 k0 = (i64)t * G + (has_gidx ? gidx[i] : 0);
    i64 k1 = (i64)t * G + (has_gidx ? gidx[i + 1] : 0);
    longlong2 Wv = *(const longlong2*)(W + i);
    longlong2 Vv = *(const longlong2*)(V + i);
    double g0 = g[i], g1 = g[i + 1];
    bool buf = ns[k0] < BETA_ONE || ns[k1] < BETA_ONE;
    ulonglong2 hv;
    hv.x = 0ULL; hv.y = 0ULL;
    if (buf) hv = *(const ulonglong2*)(head + i);
    i64 W0 = Wv.x, W1 = Wv.y, V0 = Vv.x, V1 = Vv.y;
    u64 h0 = hv.x, h1 = hv.y;
    fwd_core(i, &W0, &V0, &h0, g0, k0, ptr, tail, alphas, ns, invs, N, cap, scale,
             inv_scale, key, flag);
    fwd_core(i + 1, &W1, &V1, &h1, g1, k1, ptr, tail, alphas, ns, invs, N, cap, scale,
             inv_scale, key, flag);
    Wv.x = W0; Wv.y = W1; Vv.x = V0; Vv.y = V1;
    *(longlong2*)(W + i) = Wv;
    *(longlong2*)(V + i) = Vv;
    if (buf) { hv.x = h0; hv.y = h1; *(ulonglong2*)(head + i) = hv; }
    if (has_wf) {
        double2 wfv;
        wfv.x = to_float(W0, inv_scale); wfv.y = to_float(W1, inv_scale);
        *(double2*)(wf + i) = wfv;
    }
}

__device__ __forceinline__ double warp_sum(double x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_down_sync(0xFFFFFFFFu, x, o);
    return x;
}

/* Undo the velocity update of step t_vel (if >= 0), accumulating d_beta[t_vel],
   then the position update of step t_pos (if >= 0), accumulating d_alpha[t_pos]:
       vel:  V <- (V + fix((1-b) g)) * 2**32/n;  d_beta += dv (v + g);  dw -= Hu;  dv *= b
       pos:  d_alpha += dw v;  W <- W - fix(alpha v);  dv += alpha dw;  u = (1-b') dv
   Each block owns a contiguous range of elements (group sums are flushed once
   per block, or on a change of group). */
extern "C" __global__ void rev_step(
    i64* W, i64* V, u64* head, int* ptr, u16* tail, double* wf,
    const double* g, const double* hw, double* dw, double* dv, double* uo,
    const double* alphas, const i64* ns, const double* invs, const int* gidx,
    double* d_alpha, double* d_beta,
    i64 N, int G, int has_gidx, int has_wf, int t_vel, int t_pos, i64 cap,
    double scale, double inv_scale, u64 key_vel, u64 key_pos, u64* flag)
{
    i64 chunk = (N + gridDim.x - 1) / gridDim.x;
    i64 start = (i64)blockIdx.x * chunk;
    i64 end = start + chunk < N ? start + chunk : N;
    double acc_a = 0.0, acc_b = 0.0;
    int cg = -1;
    for (i64 i = start + threadIdx.x; i < end; i += blockDim.x) {
        int grp = has_gidx ? gidx[i] : 0;
        if (grp != cg) {
            if (cg >= 0) {
                if (t_pos >= 0) atomicAdd(d_alpha + (i64)t_pos * G + cg, acc_a);
                if (t_vel >= 0) atomicAdd(d_beta + (i64)t_vel * G + cg, acc_b);
            }
            cg = grp; acc_a = 0.0; acc_b = 0.0;
        }
        i64 Vi = V[i];
        double dwi = dw[i], dvi = dv[i];
        if (t_vel >= 0) {
            i64 k = (i64)t_vel * G + grp;
            i64 n = ns[k];
            double gi = g[i], hi = hw[i];
            if (!isfinite(gi)) report(flag, key_vel, 1, 1);
            if (!isfinite(hi)) report(flag, key_vel, 2, 9);
            double omb = (double)(BETA_ONE - n) * INV_BETA_ONE;
            i64 D;
            int e = to_fixed(__dmul_rn(omb, gi), scale, &D);
            if (e == 2) report(flag, key_vel, 3, 4);
            if (!add_checked(Vi, D, false, &Vi)) report(flag, key_vel, 4, 5);
            if (n < BETA_ONE) {
                Tail tl = {tail, ptr, N, cap, i};
                bool under = false, ovf = false;
                u64 h = head[i];
                Vi = bb_divide(Vi, n, invs[k], &h, tl, &under, &ovf);
                head[i] = h;
                if (ovf) report(flag, key_vel, 5, 10);
                if (under) report(flag, key_vel, 6, 2);
            }
            double vt = to_float(Vi, inv_scale);
            double beta = (double)n * INV_BETA_ONE;
            acc_b = __dadd_rn(acc_b, __dmul_rn(dvi, __dadd_rn(vt, gi)));
            dwi = __dsub_rn(dwi, hi);
            dvi = __dmul_rn(dvi, beta);
        }
        if (t_pos >= 0) {
            i64 k = (i64)t_pos * G + grp;
            double vt = to_float(Vi, inv_scale);
            double a = alphas[k];
            acc_a = __dadd_rn(acc_a, __dmul_rn(dwi, vt));
            i64 D;
            int e = to_fixed(__dmul_rn(a, vt), scale, &D);
            if (e == 1) report(flag, key_pos, 1, 6);
            if (e == 2) report(flag, key_pos, 2, 7);
            i64 Wi = W[i];
            if (!add_checked(Wi, D, true, &Wi)) report(flag, key_pos, 3, 8);
            W[i] = Wi;
            dvi = __dadd_rn(dvi, __dmul_rn(a, dwi));
            double beta2 = (double)ns[k] * INV_BETA_ONE;
            uo[i] = __dmul_rn(__dsub_rn(1.0, beta2), dvi);
            if (has_wf) wf[i] = to_float(Wi, inv_scale);
        }
        V[i] = Vi;
        dw[i] = dwi;
        dv[i] = dvi;
    }
    /* flush the last partial sums: one atomic per block when the block is in one group */
    __shared__ double sa[32], sb[32];
    __shared__ int sg;
    if (threadIdx.x == 0) sg = (end > start) ? (has_gidx ? gidx[end - 1] : 0) : -1;
    __syncthreads();
    int last = sg;
    int uniform = __syncthreads_and(cg < 0 || cg == last);
    if (!uniform) {
        if (cg >= 0) {
            if (t_pos >= 0) atomicAdd(d_alpha + (i64)t_pos * G + cg, acc_a);
            if (t_vel >= 0) atomicAdd(d_beta + (i64)t_vel * G + cg, acc_b);
        }
        return;
    }
    if (last < 0) return;
    acc_a = warp_sum(acc_a);
    acc_b = warp_sum(acc_b);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) { sa[warp] = acc_a; sb[warp] = acc_b; }
    __syncthreads();
    if (warp == 0) {
        int nw = (blockDim.x + 31) >> 5;
        acc_a = lane < nw ? sa[lane] : 0.0;
        acc_b = lane < nw ? sb[lane] : 0.0;
        acc_a = warp_sum(acc_a);
        acc_b = warp_sum(acc_b);
        if (lane == 0) {
            if (t_pos >= 0) atomicAdd(d_alpha + (i64)t_pos * G + last, acc_a);
            if (t_vel >= 0) atomicAdd(d_beta + (i64)t_vel * G + last, acc_b);
        }
    }
}

/* Plain float64 momentum step (the baseline the exact step is timed against). */
extern "C" __global__ void plain_step(
    double* w, double* v, const double* g, const double* alphas, const double* betas,
    const int* gidx, i64 N, int G, int has_gidx, int t)
{
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N) return;
    int grp = has_gidx ? gidx[i] : 0;
    i64 k = (i64)t * G + grp;
    double b = betas[k];
    double vi = __dsub_rn(__dmul_rn(b, v[i]), __dmul_rn(__dsub_rn(1.0, b), g[i]));
    v[i] = vi;
    w[i] = __dadd_rn(w[i], __dmul_rn(alphas[k], vi));
}
"""
