"""Numba CPU implementation of :func:`subspacelab.kernels.sampled_residual`."""

import numba
import numpy as np


def _residual(rows, cols, values, U, V, out):
    k = U.shape[1]
    for p in numba.prange(out.shape[0]):
        i = rows[p]
        j = cols[p]
        s = 0.0
        for a in range(k):
            s += U[i, a] * V[j, a]
        out[p] = values[p] - s


_PAR = numba.njit(parallel=True, cache=True, nogil=True)(_residual)
_SER = numba.njit(parallel=False, cache=True, nogil=True)(_residual)
PARALLEL_MIN_WORK = 20_000_000  # flops below which starting the thread team costs more than it saves


def sampled_residual_numba(rows, cols, values, U, V):
    out = np.empty(rows.shape[0], dtype=U.dtype)
    fn = _PAR if 2 * rows.shape[0] * U.shape[1] >= PARALLEL_MIN_WORK else _SER
    fn(rows, cols, values, U, V.astype(U.dtype, copy=False), out)
    return out
