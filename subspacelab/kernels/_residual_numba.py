"""Numba CPU implementation of :func:`subspacelab.kernels.sampled_residual`."""

import numba
import numpy as np


@numba.njit(parallel=True, cache=True, nogil=True)
def _residual(rows, cols, values, U, V, out):
    k = U.shape[1]
    for p in numba.prange(out.shape[0]):
        i = rows[p]
        j = cols[p]
        s = 0.0
        for a in range(k):
            s += U[i, a] * V[j, a]
        out[p] = values[p] - s


def sampled_residual_numba(rows, cols, values, U, V):
    out = np.empty(rows.shape[0], dtype=U.dtype)
    _residual(rows, cols, values, U, V.astype(U.dtype, copy=False), out)
    return out
