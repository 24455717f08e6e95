"""CUDA tensors: exact training on the CuPy kernels of :mod:`reversible.gpu`, zero-copy.

The engine state (fixed-point weights and velocities, information buffer)
lives in CuPy arrays; every step hands the weights to PyTorch as a tensor
viewing the same device memory (``torch.from_dlpack``) and takes the gradient
back the same way (``cupy.from_dlpack`` inside :func:`reversible.gpu.sgd` and
:func:`reversible.gpu.adam`).
CuPy launches on PyTorch's current stream, so nothing waits for the device
between steps: the engine's error flag is read every ``check_every`` steps
and at the end.  ``backend`` (tests) runs the same CUDA source on the CPU
with NumPy arrays (:func:`reversible.gpu.emulate.backend`); the exchange is
then DLPack between NumPy and CPU tensors.
"""

import contextlib

import torch

from .. import methods
from ..errors import ReversibilityError
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
    """Exact training of a CUDA model on :mod:`reversible.gpu`; ``backward`` reverses it.

    ``start(grad, vjp, grad_hvp)`` trains on the device with the loss's
    derivatives (:func:`reversible.gpu.sgd` or :func:`reversible.gpu.adam`
    with the run's hyperparameters) and returns the trained run;
    ``first_gradient(g)``, if given, sees step 0's gradient once (SGD's
    resolution check).
    """

    method = methods.get("exact")           # what the CUDA path runs (it sees every kind)

    def __init__(self, derivs, start, device, check, backend=None, first_gradient=None):
        self.derivs, self.start, self.device = derivs, start, device
        self.check, self.backend, self.first_gradient = check, backend, first_gradient
        self.trained = None

    def grad(self, w, meta, t):
        g = self.derivs.grad(as_torch(w), meta, t)
        if t == 0 and self.first_gradient is not None:
            first, self.first_gradient = self.first_gradient, None
            first(g)
        return g

    def vjp(self, w, meta, t, u):
        return self.derivs.vjp(as_torch(w), meta, t, as_torch(u))

    def grad_hvp(self, w, meta, t, vector):
        return self.derivs.grad_then_hvp(as_torch(w), meta, t, lambda g: as_torch(vector(g)))

    def forward(self):
        with torch_stream(self.backend, self.device):
            self.trained = self.start(self.grad, self.vjp, self.grad_hvp)
            return as_torch(self.trained.w).to(self.device)

    def backward(self, dw):
        dw = dw.detach().to(self.device, torch.float64).contiguous()
        with torch_stream(self.backend, self.device):
            try:
                out = self.trained.hypergradient(dw, keep=True, check=self.check)
            except ReversibilityError as err:
                raise type(err)(determinism.with_advice(err, self.device)) from err
        return {k: as_torch(v).to(self.device) for k, v in out.items() if v is not None}
