"""Finding CuPy and a CUDA device, with a clear error when either is missing."""

_INSTALL = ("install the 'gpu' extra (pip install 'reversible-learning[gpu]'), or CuPy for your CUDA: "
            "pip install cupy-cuda12x (CUDA 12) or cupy-cuda13x (CUDA 13)")


class GPUUnavailableError(ImportError):
    """CuPy is not installed or no CUDA device can be used."""


def require_cupy():
    """Return the ``cupy`` module with a usable CUDA device, or raise :class:`GPUUnavailableError`."""
    try:
        import cupy
    except Exception as err:  # ImportError, or a CuPy that fails to load its CUDA libraries
        raise GPUUnavailableError(f"reversible.gpu needs CuPy, which could not be imported ({err}); "
                                  + _INSTALL) from err
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:
        raise GPUUnavailableError(f"reversible.gpu found CuPy but no usable CUDA device ({err}); "
                                  "check the NVIDIA driver and that the CuPy wheel matches your "
                                  "CUDA version (" + _INSTALL + ")") from err
    if count < 1:
        raise GPUUnavailableError("reversible.gpu found CuPy but no CUDA device")
    return cupy


def has_cuda():
    """True when CuPy imports and sees a CUDA device (never raises)."""
    try:
        require_cupy()
        return True
    except GPUUnavailableError:
        return False


def array_module(x):
    """``cupy`` for CuPy arrays, else ``numpy`` (imports CuPy only if ``x`` is one of its arrays)."""
    import numpy
    if type(x).__module__.split(".")[0] == "cupy":
        import cupy
        return cupy
    return numpy
