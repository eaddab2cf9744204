"""numba.cuda implementation of :func:`subspacelab.kernels.soft_threshold`."""

from numba import cuda

_THREADS = 256


@cuda.jit
def _signed(flat, lam, out):
    i = cuda.grid(1)
    if i < flat.size:
        v = flat[i]
        a = abs(v) - lam
        if a > 0:
            out[i] = a if v > 0 else -a
        else:
            out[i] = 0.0 * v


@cuda.jit
def _nonneg(flat, lam, out):
    i = cuda.grid(1)
    if i < flat.size:
        a = flat[i] - lam
        out[i] = a if a > 0 else 0.0


def soft_threshold_cuda(x, lam, nonnegative):
    """``x`` is a numba device array; returns a new device array of the same shape."""
    flat = x.reshape(x.size)
    out = cuda.device_array(flat.shape, dtype=flat.dtype)
    if flat.size:
        blocks = (flat.size + _THREADS - 1) // _THREADS
        (_nonneg if nonnegative else _signed)[blocks, _THREADS](flat, flat.dtype.type(lam), out)
    return out.reshape(x.shape)
