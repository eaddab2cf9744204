"""numba.cuda implementation of :func:`subspacelab.kernels.sampled_residual` (one entry per thread)."""

import numpy as np
from numba import cuda

_THREADS = 128


@cuda.jit
def _residual(rows, cols, values, U, V, out):
    p = cuda.grid(1)
    if p < out.shape[0]:
        i = rows[p]
        j = cols[p]
        s = 0.0
        for a in range(U.shape[1]):
            s += U[i, a] * V[j, a]
        out[p] = values[p] - s


def sampled_residual_cuda(rows, cols, values, U, V):
    n = int(rows.shape[0])
    out = cuda.device_array(n, dtype=np.dtype(U.dtype))
    if n:
        _residual[max(1, (n + _THREADS - 1) // _THREADS), _THREADS](rows, cols, values, U, V, out)
    return out
