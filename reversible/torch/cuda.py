"""CUDA tensors: exact training on the CuPy kernels of :mod:`reversible.gpu`, zero-copy.

The engine state (fixed-point weights and velocities, information buffer)
lives in CuPy arrays; every step hands the weights to PyTorch as a tensor
viewing the same device memory (``torch.from_dlpack``) and takes the gradient
back the same way (``cupy.from_dlpack`` inside :func:`reversible.gpu.sgd`).
CuPy launches on PyTorch's current stream, so nothing waits for the device
between steps: the engine's error flag is read every ``check_every`` steps
and at the end.  ``backend`` (tests) runs the same CUDA source on the CPU
with NumPy arrays (:func:`reversible.gpu.emulate.backend`); the exchange is
then DLPack between NumPy and CPU tensors.
"""

import contextlib

import torch

from ..buffer import effective_beta
from .. import methods
from ..errors import ReversibilityError
from ..resolution import check_first_step
from . import determinism


def as_torch(x):
    """A tensor sharing memory with the CuPy / NumPy array ``x`` (DLPack, no copy)."""
    return None if x is None else torch.from_dlpack(x)


@contextlib.contextmanager
def torch_stream(backend, device):
    """Make CuPy work on ``device`` and launch on PyTorch's current stream there (no
    cross-stream waits, and memory PyTorch frees is not reused before CuPy's kernels read it)."""
    if backend is not None:
        yield
        return
    import cupy
    index = device.index if device.index is not None else torch.cuda.current_device()
    with torch.cuda.device(index), cupy.cuda.Device(index):
        with cupy.cuda.ExternalStream(torch.cuda.current_stream(index).cuda_stream):
            yield


def gpu_module():
    """``reversible.gpu`` (imported late: it is only needed for CUDA tensors)."""
    import reversible.gpu as gpu
    return gpu


class CudaRun:
    """Exact training of a CUDA model on :func:`reversible.gpu.sgd`; ``backward`` reverses it."""

    method = methods.get("exact")           # what the CUDA path runs (it sees every kind)

    def __init__(self, derivs, w0, v0, schedule, betas, meta, frac_bits, group_index, stats, check,
                 check_every, progress, backend=None):
        self.derivs, self.w0, self.v0, self.meta = derivs, w0, v0, meta
        self.schedule, self.betas, self.frac_bits = schedule, betas, frac_bits
        self.group_index, self.stats, self.check = group_index, stats, check
        self.check_every, self.progress, self.backend = check_every, progress, backend
        self.device = w0.device
        self.trained = None
        self._check_resolution = True

    def grad(self, w, meta, t):
        g = self.derivs.grad(as_torch(w), meta, t)
        if t == 0 and self._check_resolution:
            # once, on the host: is frac_bits fine enough for step 0's increments?
            self._check_resolution = False
            beta = effective_beta(self.betas[0])[self.group_index]
            self.stats["first_step_rounding"] = check_first_step(
                g.detach().cpu().numpy(), self.schedule.alphas[0][self.group_index], 1.0 - beta,
                self.frac_bits)
        return g

    def vjp(self, w, meta, t, u):
        return self.derivs.vjp(as_torch(w), meta, t, as_torch(u))

    def forward(self):
        gpu = gpu_module()
        with torch_stream(self.backend, self.device):
            self.trained = gpu.sgd(
                self.grad, self.w0, self.schedule.alphas, self.betas, self.meta, vjp=self.vjp,
                v0=self.v0, frac_bits=self.frac_bits,
                group_index=self.group_index if self.schedule.G > 1 else None, stats=self.stats,
                check_every=self.check_every, progress=self.progress, backend=self.backend)
            return as_torch(self.trained.w).to(self.device)

    def backward(self, dw):
        dw = dw.detach().to(self.device, torch.float64).contiguous()
        with torch_stream(self.backend, self.device):
            try:
                out = self.trained.hypergradient(dw, keep=True, check=self.check)
            except ReversibilityError as err:
                raise type(err)(determinism.with_advice(err, self.device)) from err
        return {k: as_torch(v).to(self.device) for k, v in out.items() if v is not None}
