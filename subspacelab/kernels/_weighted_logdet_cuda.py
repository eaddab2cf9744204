"""numba.cuda implementation of :func:`subspacelab.kernels.weighted_logdet`.

Three launches: one thread per upper-triangular entry (j, a, b) accumulates
M_j[a, b] = delta_ab + s sum_i W_ij Z_ia Z_ib; one thread per column factorises M_j in place
(Cholesky, lower triangle), sums the log-diagonal and, when asked, overwrites the factor with its
inverse; one thread per (i, j) computes q_ij = |L_j^{-1} z_i|^2 without scratch memory.
Only the (m, d, d) matrices are stored.
"""

import math

import numpy as np
from numba import cuda

_THREADS = 128


@cuda.jit
def _build(Z, W, scale, M):
    idx = cuda.grid(1)
    n, d = Z.shape
    m = W.shape[1]
    if idx < m * d * d:
        j = idx // (d * d)
        rem = idx - j * d * d
        a = rem // d
        b = rem - a * d
        if b >= a:
            acc = 0.0
            for i in range(n):
                acc += W[i, j] * Z[i, a] * Z[i, b]
            v = scale * acc
            if a == b:
                v += 1.0
            M[j, a, b] = v
            M[j, b, a] = v


@cuda.jit
def _factor(M, logdet, invert):
    j = cuda.grid(1)
    m, d = M.shape[0], M.shape[1]
    if j < m:
        acc = 0.0
        for c in range(d):  # Cholesky, column by column, lower triangle in place
            s = M[j, c, c]
            for k in range(c):
                s -= M[j, c, k] * M[j, c, k]
            dcc = math.sqrt(s)
            M[j, c, c] = dcc
            acc += math.log(dcc)
            for r in range(c + 1, d):
                s = M[j, r, c]
                for k in range(c):
                    s -= M[j, r, k] * M[j, c, k]
                M[j, r, c] = s / dcc
        logdet[j] = 2.0 * acc
        if invert:
            # L^{-1} in place, row by row: row r only reads rows < r (already inverted) and the
            # not-yet-overwritten L[r, :r].
            for r in range(d):
                inv_rr = 1.0 / M[j, r, r]
                for c in range(r):
                    s = 0.0
                    for k in range(c, r):
                        s += M[j, r, k] * M[j, k, c]
                    M[j, r, c] = -s * inv_rr
                M[j, r, r] = inv_rr


@cuda.jit
def _quadratic(Z, Linv, quad):
    idx = cuda.grid(1)
    n, d = Z.shape
    m = Linv.shape[0]
    if idx < n * m:
        i = idx // m
        j = idx - i * m
        q = 0.0
        for r in range(d):
            y = 0.0
            for c in range(r + 1):
                y += Linv[j, r, c] * Z[i, c]
            q += y * y
        quad[i, j] = q


def _blocks(size):
    return max(1, (size + _THREADS - 1) // _THREADS)


def weighted_logdet_cuda(Z, W, scale, return_quadratic):
    """``Z`` (n, d) and ``W`` (n, m) are numba device arrays; returns device arrays."""
    n, d = (int(s) for s in Z.shape)
    m = int(W.shape[1])
    dt = Z.dtype
    M = cuda.device_array((m, d, d), dtype=dt)
    logdet = cuda.device_array(m, dtype=dt)
    _build[_blocks(m * d * d), _THREADS](Z, W, dt.type(scale), M)
    _factor[_blocks(m), _THREADS](M, logdet, bool(return_quadratic))
    if not return_quadratic:
        return logdet, None
    quad = cuda.device_array((n, m), dtype=dt)
    _quadratic[_blocks(n * m), _THREADS](Z, M, quad)
    return logdet, quad
