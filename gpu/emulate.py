"""Run the CUDA kernels' source on the CPU, for tests on machines without a GPU.

:func:`backend` compiles the CUDA source of both update rules
(:mod:`reversible.gpu._source`, :mod:`reversible.gpu._adam_source`) with the
host C++ compiler behind a small header that maps the CUDA built-ins to
sequential C++ (one thread per block, so warp shuffles and barriers are
trivial), and returns a backend that :func:`reversible.gpu.sgd` and
:func:`reversible.gpu.adam` accept in place of CuPy (arrays are NumPy).  The
integer and float64 logic is the very code the GPU runs; launch geometry,
atomics and the device's memory system are not exercised.
"""

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import types

import numpy as np

from . import _adam_source, _source

_SHIM = r"""
#include <cmath>
#include <cstdint>
struct dim3_ { unsigned x, y, z; };
static dim3_ blockIdx, threadIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
using std::isfinite; using std::rint; using std::fabs; using std::floor;
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dsub_rn(double a, double b) { return a - b; }
static inline double __ll2double_rn(long long x) { return (double)x; }
static inline double __ull2double_rn(unsigned long long x) { return (double)x; }
static inline unsigned long long atomicMin(unsigned long long* p, unsigned long long v) {
    unsigned long long o = *p; if (v < o) *p = v; return o; }
static inline double atomicAdd(double* p, double v) { double o = *p; *p = o + v; return o; }
static inline double __shfl_down_sync(unsigned, double, int) { return 0.0; }
static inline void __syncthreads() {}
static inline int __syncthreads_and(int p) { return p; }
struct longlong2 { long long x, y; };
struct ulonglong2 { unsigned long long x, y; };
struct double2 { double x, y; };
"""

# (kernel, C parameter list, argument names); each launcher runs blocks of one thread
_KERNELS = {
    "fwd_step": "i64* W, i64* V, u64* head, int* ptr, u16* tail, double* wf, const double* g, "
                "const double* alphas, const i64* ns, const double* invs, const int* gidx, "
                "i64 N, int G, int has_gidx, int has_wf, int t, i64 cap, double scale, "
                "double inv_scale, u64 key, u64* flag",
    "fwd_step2": None,
    "rev_step": "i64* W, i64* V, u64* head, int* ptr, u16* tail, double* wf, const double* g, "
                "const double* hw, double* dw, double* dv, double* uo, const double* alphas, "
                "const i64* ns, const double* invs, const int* gidx, double* d_alpha, "
                "double* d_beta, i64 N, int G, int has_gidx, int has_wf, int t_vel, int t_pos, "
                "i64 cap, double scale, double inv_scale, u64 key_vel, u64 key_pos, u64* flag",
    "divmod_check": "const i64* V, const u64* x, const i64* n, const double* inv, i64* q, i64* r, "
                    "u64* xq, i64* xr, i64 N",
    "plain_step": "double* w, double* v, const double* g, const double* alphas, "
                  "const double* betas, const int* gidx, i64 N, int G, int has_gidx, int t",
}

_CTYPES = {np.dtype(np.int64): ctypes.c_int64, np.dtype(np.int32): ctypes.c_int32,
           np.dtype(np.float64): ctypes.c_double, np.dtype(np.uint64): ctypes.c_uint64}

_CACHE = {}


def _launchers(kernels=None):
    out = []
    for name, params in (_KERNELS if kernels is None else kernels).items():
        params = params or _KERNELS["fwd_step"]
        names = ", ".join(p.split()[-1].lstrip("*") for p in params.split(","))
        out.append(f'extern "C" void launch_{name}(int nblocks, {params}) {{\n'
                   f"    blockDim.x = 1; threadIdx.x = 0; gridDim.x = nblocks;\n"
                   f"    for (int b = 0; b < nblocks; ++b) {{ blockIdx.x = b; {name}({names}); }}\n}}\n")
    return "\n".join(out)


def compiler():
    """Path of a C++ compiler, or None."""
    return shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++") or shutil.which("clang++")


def _build(extra_source="", kernels=None):
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set CXX); the CPU emulation of the kernels needs one")
    code = _SHIM + _source.SOURCE + extra_source + _launchers(kernels)
    tag = hashlib.sha1(code.encode()).hexdigest()[:12]
    lib = os.path.join(tempfile.gettempdir(), f"reversible_gpu_emu_{tag}_{os.getuid()}.so")
    if os.path.exists(lib):
        return ctypes.CDLL(lib)
    with tempfile.TemporaryDirectory(prefix="reversible_gpu_emu_") as d:
        src, tmp = os.path.join(d, "k.cpp"), os.path.join(d, "k.so")
        with open(src, "w") as f:
            f.write(code)
        cmd = [cxx, "-O2", "-std=c++14", "-ffp-contract=off", "-fno-fast-math", "-fno-strict-aliasing",
               "-shared", "-fPIC", "-o", tmp, src]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"compiling the kernel emulation failed:\n{res.stderr[-3000:]}")
        os.replace(tmp, lib)      # atomic: concurrent test runs never load a half-written library
    return ctypes.CDLL(lib)


def _arg(x):
    if isinstance(x, np.ndarray):
        if not x.flags.c_contiguous:
            raise ValueError("emulated kernels need contiguous arrays")
        return ctypes.c_void_p(x.ctypes.data)
    x = np.asarray(x)
    return _CTYPES[x.dtype](x.item())


def _kernel(lib, name):
    fn = getattr(lib, f"launch_{name}")
    fn.restype = None

    def launch(grid, block, args):
        nb = int(grid[0]) * int(block[0]) if name != "rev_step" else int(grid[0])
        fn(ctypes.c_int(nb), *[_arg(a) for a in args])
    return launch


def backend(sms=1):
    """A backend running the kernels on the CPU (``xp`` is NumPy); raises RuntimeError without a compiler.

    It holds the kernels of both update rules: SGD with momentum's (for
    :class:`reversible.gpu.engine.Engine`) and Adam's (for
    :class:`reversible.gpu.adam_step.DeviceAdam`).  ``sms`` plays the
    multiprocessor count: the reverse kernel uses ``8 * sms`` blocks at most,
    each looping over a contiguous range of elements.
    """
    kernels = dict(_KERNELS, **_adam_source.KERNELS)
    if "lib" not in _CACHE:
        _CACHE["lib"] = _build(_adam_source.ADAM_SOURCE, kernels)
    lib = _CACHE["lib"]
    return types.SimpleNamespace(xp=np, kernels={n: _kernel(lib, n) for n in kernels}, sms=int(sms))
