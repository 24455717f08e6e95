"""CUDA C source of the exact Adam step (compiled after :data:`reversible.gpu._source.SOURCE`,
whose device functions it uses: ``to_fixed``, ``add_checked``, ``bb_multiply``, ``bb_divide``).

The integer and float64 semantics are those of :mod:`reversible.adam_rule`'s
NumPy specification, bit for bit: per element, ``m`` and ``s`` are multiplied
by ``beta1`` / ``beta2`` through the element's rANS head and tail, the rounded
gradient terms added, ``w`` multiplied by the decay factor, and the position
increment ``alpha (m / c1) / (sqrt(s / c2) + eps)`` (IEEE division and square
root, no fused multiply-add) rounded and subtracted; the reverse kernels undo
it in the opposite order.  ``consts`` holds one row of 17 doubles per group,
laid out as :func:`reversible.adam_numba` builds them.  A failure lowers a per-launch flag
word to the number of its check (``atomicMin``, from ``2**64 - 1``), so the
host sees the first check that failed in the specification's order and raises
its error (:mod:`reversible.gpu.adam_step`).
"""

# bits of the flag word, in the order the NumPy specification checks
FWD_BITS = ("m_step_nonfinite", "m_step", "m", "s_step_nonfinite", "s_step", "s", "s_negative",
            "w_step_nonfinite", "w_step", "w", "capacity")
POS_BITS = ("w_step_nonfinite", "w_step", "w", "underflow", "undo_overflow")
MOM_BITS = ("s_step_nonfinite", "s_step", "s", "underflow_s", "undo_overflow_s",
            "m_step_nonfinite", "m_step", "m", "underflow_m", "undo_overflow_m")

# kernel -> C parameter list (the emulation's launchers are generated from these)
KERNELS = {
    "adam_fwd": "i64* W, i64* M, i64* S, u64* head, int* ptr, u16* tail, const double* g, "
                "const i64* n1s, const i64* n2s, const i64* nds, const double* consts, "
                "const int* gidx, i64 N, int has_gidx, i64 cap, u64* flag",
    "adam_undo_position": "i64* W, const i64* M, const i64* S, u64* head, int* ptr, u16* tail, "
                          "const i64* nds, const double* consts, const int* gidx, i64 N, "
                          "int has_gidx, i64 cap, u64* flag",
    "adam_undo_moments": "i64* M, i64* S, u64* head, int* ptr, u16* tail, const double* g, "
                         "const i64* n1s, const i64* n2s, const double* consts, const int* gidx, "
                         "i64 N, int has_gidx, i64 cap, u64* flag",
}

ADAM_SOURCE = r"""
/* the flag keeps the lowest failing check: it starts at 2**64 - 1 */
__device__ __forceinline__ void flag_bit(u64* flag, int bit) {
    atomicMin(flag, (u64)bit);
}

/* one fixed-point rounding, flagging bit `base` (non-finite) or `base + 1` (range) */
__device__ __forceinline__ i64 adam_fix(double x, double scale, u64* flag, int base) {
    i64 D;
    int e = to_fixed(x, scale, &D);
    if (e == 1) flag_bit(flag, base);
    if (e == 2) flag_bit(flag, base + 1);
    return D;
}

/* alpha (m / c1) / (sqrt(s / c2) + eps) from the fixed-point moments */
__device__ __forceinline__ double adam_increment(i64 M, i64 S, const double* k) {
    double m = __dmul_rn(__ll2double_rn(M), k[9]);
    double s = __dmul_rn(__ll2double_rn(S), k[10]);
    return (k[2] * (m / k[3])) / (sqrt(s / k[4]) + k[5]);
}

extern "C" __global__ void adam_fwd(
    i64* W, i64* M, i64* S, u64* head, int* ptr, u16* tail, const double* g,
    const i64* n1s, const i64* n2s, const i64* nds, const double* consts, const int* gidx,
    i64 N, int has_gidx, i64 cap, u64* flag)
{
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N) return;
    int grp = has_gidx ? gidx[i] : 0;
    const double* k = consts + 17 * (i64)grp;
    i64 n1 = n1s[grp], n2 = n2s[grp], nd = nds[grp];
    Tail tl = {tail, ptr, N, cap, i};
    bool cap_err = false;
    u64 h = head[i];
    double gi = g[i];
    i64 m = M[i], s = S[i], w = W[i], D;
    if (n1 < BETA_ONE) m = bb_multiply(m, n1, k[11], &h, tl, &cap_err);
    D = adam_fix(__dmul_rn(k[6], gi), k[0], flag, 0);
    if (!add_checked(m, D, false, &m)) flag_bit(flag, 2);
    if (n2 < BETA_ONE) s = bb_multiply(s, n2, k[12], &h, tl, &cap_err);
    D = adam_fix(__dmul_rn(k[7], __dmul_rn(gi, gi)), k[1], flag, 3);
    if (!add_checked(s, D, false, &s)) flag_bit(flag, 5);
    if (s < 0) flag_bit(flag, 6);
    if (nd < BETA_ONE) w = bb_multiply(w, nd, k[13], &h, tl, &cap_err);
    D = adam_fix(adam_increment(m, s, k), k[8], flag, 7);
    if (!add_checked(w, D, true, &w)) flag_bit(flag, 9);
    if (cap_err) flag_bit(flag, 10);
    W[i] = w; M[i] = m; S[i] = s; head[i] = h;
}

extern "C" __global__ void adam_undo_position(
    i64* W, const i64* M, const i64* S, u64* head, int* ptr, u16* tail, const i64* nds,
    const double* consts, const int* gidx, i64 N, int has_gidx, i64 cap, u64* flag)
{
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N) return;
    int grp = has_gidx ? gidx[i] : 0;
    const double* k = consts + 17 * (i64)grp;
    i64 nd = nds[grp];
    Tail tl = {tail, ptr, N, cap, i};
    bool under = false, ovf = false;
    u64 h = head[i];
    i64 w = W[i];
    i64 D = adam_fix(adam_increment(M[i], S[i], k), k[8], flag, 0);
    if (!add_checked(w, D, false, &w)) flag_bit(flag, 2);
    if (nd < BETA_ONE) w = bb_divide(w, nd, k[13], &h, tl, &under, &ovf);
    if (under) flag_bit(flag, 3);
    if (ovf) flag_bit(flag, 4);
    W[i] = w; head[i] = h;
}

extern "C" __global__ void adam_undo_moments(
    i64* M, i64* S, u64* head, int* ptr, u16* tail, const double* g, const i64* n1s,
    const i64* n2s, const double* consts, const int* gidx, i64 N, int has_gidx, i64 cap,
    u64* flag)
{
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N) return;
    int grp = has_gidx ? gidx[i] : 0;
    const double* k = consts + 17 * (i64)grp;
    i64 n1 = n1s[grp], n2 = n2s[grp];
    Tail tl = {tail, ptr, N, cap, i};
    bool under_s = false, ovf_s = false, under_m = false, ovf_m = false;
    u64 h = head[i];
    double gi = g[i];
    i64 s = S[i], m = M[i];
    i64 D = adam_fix(__dmul_rn(k[7], __dmul_rn(gi, gi)), k[1], flag, 0);
    if (!add_checked(s, D, true, &s)) flag_bit(flag, 2);
    if (n2 < BETA_ONE) s = bb_divide(s, n2, k[12], &h, tl, &under_s, &ovf_s);
    if (under_s) flag_bit(flag, 3);
    if (ovf_s) flag_bit(flag, 4);
    D = adam_fix(__dmul_rn(k[6], gi), k[0], flag, 5);
    if (!add_checked(m, D, true, &m)) flag_bit(flag, 7);
    if (n1 < BETA_ONE) m = bb_divide(m, n1, k[11], &h, tl, &under_m, &ovf_m);
    if (under_m) flag_bit(flag, 8);
    if (ovf_m) flag_bit(flag, 9);
    M[i] = m; S[i] = s; head[i] = h;
}
"""
