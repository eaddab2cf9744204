"""Numba CPU implementation of :func:`subspacelab.kernels.weighted_logdet`.

One column j per parallel iteration: the upper triangle of M_j = I + s sum_i w_ij z_i z_i^T is
accumulated in a d x d array owned by the iteration (zero weights skipped), then factorised by
Cholesky; the quadratic forms are the squared norms of the rows of Z L_j^{-T}. Nothing larger
than (n, d) is formed per thread.
"""

import numba
import numpy as np


@numba.njit(parallel=True, cache=True, nogil=True)
def _columns(Z, W, scale, want_quad, logdet, quad):
    n, d = Z.shape
    m = W.shape[1]
    for j in numba.prange(m):
        M = np.zeros((d, d), dtype=Z.dtype)
        for i in range(n):  # upper triangle of sum_i w_ij z_i z_i^T
            w = W[i, j]
            if w != 0.0:
                for a in range(d):
                    wa = w * Z[i, a]
                    for b in range(a, d):
                        M[a, b] += wa * Z[i, b]
        for a in range(d):
            M[a, a] = 1.0 + scale * M[a, a]
            for b in range(a + 1, d):
                M[a, b] *= scale
                M[b, a] = M[a, b]
        L = np.linalg.cholesky(M)
        acc = 0.0
        for a in range(d):
            acc += np.log(L[a, a])
        logdet[j] = 2.0 * acc
        if want_quad:
            # q_ij = |L^{-1} z_i|^2; L^{-1} by forward substitution on the identity
            Linv = np.zeros((d, d), dtype=Z.dtype)
            for c in range(d):
                for r in range(c, d):
                    s = 1.0 if r == c else 0.0
                    for k in range(c, r):
                        s -= L[r, k] * Linv[k, c]
                    Linv[r, c] = s / L[r, r]
            for i in range(n):
                q = 0.0
                for r in range(d):
                    y = 0.0
                    for c in range(r + 1):
                        y += Linv[r, c] * Z[i, c]
                    q += y * y
                quad[i, j] = q


def weighted_logdet_numba(Z, W, scale, return_quadratic):
    n, d = Z.shape
    m = W.shape[1]
    Z = np.ascontiguousarray(Z)
    logdet = np.empty(m, dtype=Z.dtype)
    quad = np.empty((n, m) if return_quadratic else (1, 1), dtype=Z.dtype)
    _columns(Z, np.ascontiguousarray(W), Z.dtype.type(scale), bool(return_quadratic), logdet, quad)
    return logdet, (quad if return_quadratic else None)
