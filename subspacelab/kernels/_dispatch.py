"""Choice of kernel implementation: generic array-API, Numba CPU, or CUDA.

Each kernel module exposes one public function. Behind it sit three private implementations:

* ``generic`` — written against the array API standard; always present; the definition of
  correctness that the others are tested against. Runs in the caller's namespace and device
  (NumPy, array_api_strict, torch on CPU or GPU, CuPy, ...), and keeps torch autograd working.
* ``numba`` — ``njit(parallel=True, cache=True)`` loops on NumPy arrays (CPU).
* ``cuda`` — ``numba.cuda`` kernels taking CuPy arrays or torch CUDA tensors through the CUDA
  array interface; under ``NUMBA_ENABLE_CUDASIM=1`` they run on the CPU on NumPy arrays, which
  is how CI exercises them.

``backend="auto"`` picks: NumPy input with Numba installed -> ``numba``; CuPy arrays or torch
CUDA tensors with a usable CUDA device -> ``cuda``; everything else (array_api_strict, torch on
the CPU, dask, ...) -> ``generic``, which keeps the computation in the input's namespace. The
choice can be forced per call (``backend=``) or for a block of code with
:func:`kernel_backend`. Results always come back in the caller's namespace and on its device.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import os

import array_api_compat
import numpy as np

from .._backend import move_to, to_numpy

__all__ = ["BACKENDS", "available_backends", "kernel_backend", "select_backend"]

BACKENDS = ("generic", "numba", "cuda")
_FORCED = contextvars.ContextVar("subspacelab_kernel_backend", default=None)


@contextlib.contextmanager
def kernel_backend(name):
    """Force every kernel called inside the block to use implementation ``name``.

    ``name`` is one of ``"generic"``, ``"numba"``, ``"cuda"`` or ``"auto"``.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.kernels import kernel_backend, soft_threshold
    >>> with kernel_backend("generic"):
    ...     soft_threshold(np.array([-2.0, 0.5, 3.0]), 1.0)
    array([-1.,  0.,  2.])
    """
    _check_name(name, allow_auto=True)
    token = _FORCED.set(None if name == "auto" else name)
    try:
        yield
    finally:
        _FORCED.reset(token)


def _check_name(name, allow_auto):
    allowed = BACKENDS + (("auto",) if allow_auto else ())
    if name not in allowed:
        raise ValueError(f"backend must be one of {allowed}, got {name!r}")


def numba_available():
    """Whether Numba is installed (it is imported only when a kernel runs on it)."""
    return importlib.util.find_spec("numba") is not None


def cudasim_enabled():
    """Whether the Numba CUDA simulator is switched on for this process."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def cuda_available():
    """Whether numba.cuda kernels can run here: a CUDA device, or the CUDA simulator."""
    if not numba_available():
        return False
    from numba import cuda

    try:
        return bool(cuda.is_available())
    except Exception:  # noqa: BLE001 - driver probing raises several error types
        return False


def available_backends():
    """Implementations that can run in this process, ``"generic"`` first.

    Examples
    --------
    >>> from subspacelab.kernels import available_backends
    >>> available_backends()[0]
    'generic'
    """
    out = ["generic"]
    if numba_available():
        out.append("numba")
    if cuda_available():
        out.append("cuda")
    return out


def _is_cuda_array(x):
    if array_api_compat.is_cupy_array(x):
        return True
    if array_api_compat.is_torch_array(x):
        return x.device.type == "cuda"
    return False


def select_backend(x, backend="auto"):
    """Return the implementation name to use for input ``x``.

    A forced name (argument or :func:`kernel_backend`) must be available; ``"auto"`` falls back
    to ``generic`` when the fast path's package or device is missing.
    """
    _check_name(backend, allow_auto=True)
    if backend == "auto":
        backend = _FORCED.get() or "auto"
    if backend == "auto":
        if isinstance(x, np.ndarray) and numba_available():
            return "numba"
        if _is_cuda_array(x) and cuda_available():
            return "cuda"
        return "generic"
    if backend == "numba" and not numba_available():
        raise ImportError("backend='numba' needs numba: pip install 'subspacelab[numba]'")
    if backend == "cuda" and not cuda_available():
        raise RuntimeError(
            "backend='cuda' needs a CUDA device (or NUMBA_ENABLE_CUDASIM=1 set before numba.cuda "
            "is imported)"
        )
    return backend


def to_host(*arrays):
    """NumPy views or copies of ``arrays`` (for the Numba path), C-contiguous."""
    return tuple(None if a is None else np.asarray(to_numpy(a), order="C") for a in arrays)


def from_host(result, xp, device):
    """Move NumPy results back to the caller's namespace and device."""
    if isinstance(result, tuple):
        return tuple(from_host(r, xp, device) for r in result)
    if isinstance(result, np.ndarray):
        return move_to(result, xp, device)
    return result


def to_cuda(*arrays):
    """Arrays ready for numba.cuda kernels: CAI objects wrapped as device arrays, NumPy arrays
    copied to the (possibly simulated) device."""
    from numba import cuda

    out = []
    for a in arrays:
        if a is None:
            out.append(None)
        elif _is_cuda_array(a):
            if array_api_compat.is_torch_array(a):
                a = a.detach().contiguous()
            else:
                import cupy

                a = cupy.ascontiguousarray(a)
            out.append(cuda.as_cuda_array(a))
        else:
            out.append(cuda.to_device(np.asarray(to_numpy(a), order="C")))
    return tuple(out)


def from_cuda(result, like, xp, device):
    """Convert numba device arrays back to the namespace of ``like``."""
    if isinstance(result, tuple):
        return tuple(from_cuda(r, like, xp, device) for r in result)
    if not hasattr(result, "copy_to_host"):
        return result
    if array_api_compat.is_cupy_array(like):
        import cupy

        return cupy.asarray(result)
    if array_api_compat.is_torch_array(like) and like.device.type == "cuda":
        import torch

        return torch.as_tensor(result, device=like.device)
    return move_to(result.copy_to_host(), xp, device)
