"""numba.cuda implementation of :func:`subspacelab.kernels.levenberg_marquardt`.

One thread per item runs the whole loop of :func:`._levenberg_marquardt_numba.lm_item` with its
state in local memory (three MAX_PARAMS^2 matrices and a few vectors, P <= MAX_PARAMS); only the data chunk and
the shared design matrices live in global memory, so 2^16-2^18 items fit in one launch.
"""

import numpy as np
from numba import cuda, float64, int64

from ._levenberg_marquardt_numba import BLOCK, lm_item

MAX_PARAMS = 24
_THREADS = 64


@cuda.jit
def _kernel(y, w, has_w, md, bp, br, bg, theta, free, order, rmax, bounded, max_iter, tol, cost, n_iter, status):
    b = cuda.grid(1)
    if b < y.shape[0]:
        cur = cuda.local.array(MAX_PARAMS, float64)
        trial = cuda.local.array(MAX_PARAMS, float64)
        h = cuda.local.array((MAX_PARAMS, MAX_PARAMS), float64)
        mat = cuda.local.array((MAX_PARAMS, MAX_PARAMS), float64)
        grad = cuda.local.array(MAX_PARAMS, float64)
        rhs = cuda.local.array(MAX_PARAMS, float64)
        delta = cuda.local.array(MAX_PARAMS, float64)
        diag = cuda.local.array(MAX_PARAMS, float64)
        jblk = cuda.local.array((MAX_PARAMS, BLOCK), float64)
        rblk = cuda.local.array(BLOCK, float64)
        active = cuda.local.array(MAX_PARAMS, int64)
        h2 = cuda.local.array((MAX_PARAMS, MAX_PARAMS), float64)
        grad2 = cuda.local.array(MAX_PARAMS, float64)
        c, it, st = lm_item(b, y, w, has_w, md, bp, br, bg, theta, free, order, rmax, bounded, max_iter, tol,
                            cur, trial, h, mat, grad, rhs, delta, diag, jblk, rblk, active, h2, grad2)
        cost[b] = c
        n_iter[b] = it
        status[b] = st


def levenberg_marquardt_cuda(y, w, md, bp, br, bg, theta0, free, order, rmax, bounded, max_iter, tol):
    """numba device arrays in (``w`` may be None); returns device arrays (theta, cost, n_iter, status)."""
    bsz = int(y.shape[0])
    npar = int(theta0.shape[1])
    if npar > MAX_PARAMS:
        raise ValueError(f"the CUDA kernel handles at most {MAX_PARAMS} parameters per item, got {npar}")
    theta = cuda.device_array((bsz, npar), dtype=np.float64)
    theta.copy_to_device(theta0)
    has_w = w is not None
    if w is None:
        w = cuda.to_device(np.ones((1, 1)))
    cost = cuda.device_array(bsz, dtype=np.float64)
    n_iter = cuda.device_array(bsz, dtype=np.int64)
    status = cuda.device_array(bsz, dtype=np.int64)
    blocks = max(1, (bsz + _THREADS - 1) // _THREADS)
    _kernel[blocks, _THREADS](y, w, has_w, md, bp, br, bg, theta, free, np.int64(order), np.float64(rmax),
                              bool(bounded), np.int64(max_iter), np.float64(tol), cost, n_iter, status)
    return theta, cost, n_iter, status
