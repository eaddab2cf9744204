"""numba.cuda implementation of :func:`subspacelab.kernels.ell_matvec` (one thread per output)."""

from numba import cuda

_THREADS = 256


@cuda.jit
def _ell(idx, w, x, out):
    t = cuda.grid(1)
    n_out = idx.shape[0]
    if t < x.shape[0] * n_out:
        b = t // n_out
        r = t - b * n_out
        acc = 0.0
        for j in range(idx.shape[1]):
            acc += w[r, j] * x[b, idx[r, j]]
        out[b, r] = acc


def ell_matvec_cuda(indices, weights, x):
    """Device arrays in, device array ``(B, n_out)`` out."""
    out = cuda.device_array((x.shape[0], indices.shape[0]), dtype=x.dtype)
    n = x.shape[0] * indices.shape[0]
    if n:
        _ell[(n + _THREADS - 1) // _THREADS, _THREADS](indices, weights, x, out)
    return out
