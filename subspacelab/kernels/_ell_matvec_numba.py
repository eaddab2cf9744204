"""Numba CPU implementation of :func:`subspacelab.kernels.ell_matvec` (one thread per output)."""

import numba
import numpy as np


@numba.njit(parallel=True, cache=True, nogil=True)
def _ell(idx, w, x, out):
    n_out, k = idx.shape
    B = x.shape[0]
    for t in numba.prange(B * n_out):
        b = t // n_out
        r = t - b * n_out
        acc = 0.0
        for j in range(k):
            acc += w[r, j] * x[b, idx[r, j]]
        out[b, r] = acc


def ell_matvec_numba(indices, weights, x):
    """``x`` is (B, n_in) C-contiguous; returns (B, n_out) of ``x``'s dtype."""
    out = np.empty((x.shape[0], indices.shape[0]), dtype=x.dtype)
    _ell(indices, weights, x, out)
    return out
