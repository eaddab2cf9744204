"""Numba CPU implementation of :func:`subspacelab.kernels.levenberg_marquardt`.

One ``prange`` iteration per item runs the whole damped Gauss–Newton loop of
:func:`._levenberg_marquardt_scalar.lm_item`: J^T W J and J^T W r are accumulated source by
source from the analytic Jacobian, so no (n_sources, n_params) Jacobian is stored.
"""

import numba
import numpy as np

from ._levenberg_marquardt_scalar import lm_item


@numba.njit(parallel=True, cache=True, nogil=True)
def _run(y, w, has_w, md, bp, br, bg, theta, free, order, rmax, bounded, max_iter, tol, cost, n_iter, status):
    bsz = y.shape[0]
    npar = theta.shape[1]
    for b in numba.prange(bsz):
        cur = np.empty(npar)
        trial = np.empty(npar)
        h = np.empty((npar, npar))
        mat = np.empty((npar, npar))
        grad = np.empty(npar)
        rhs = np.empty(npar)
        delta = np.empty(npar)
        diag = np.empty(npar)
        jrow = np.empty(npar)
        active = np.empty(npar, dtype=np.int64)
        h2 = np.empty((npar, npar))
        grad2 = np.empty(npar)
        c, it, st = lm_item(b, y, w, has_w, md, bp, br, bg, theta, free, order, rmax, bounded, max_iter, tol,
                            cur, trial, h, mat, grad, rhs, delta, diag, jrow, active, h2, grad2)
        cost[b] = c
        n_iter[b] = it
        status[b] = st


def levenberg_marquardt_numba(y, w, md, bp, br, bg, theta0, free, order, rmax, bounded, max_iter, tol):
    """NumPy float64 arrays in; returns (theta, cost, n_iter, status) as NumPy arrays."""
    bsz = y.shape[0]
    theta = np.array(theta0, dtype=np.float64, order="C", copy=True)
    has_w = w is not None
    w = np.ones((1, 1)) if w is None else w
    cost = np.empty(bsz)
    n_iter = np.empty(bsz, dtype=np.int64)
    status = np.empty(bsz, dtype=np.int64)
    _run(y, w, has_w, md, bp, br, bg, theta, free.astype(np.bool_), int(order), float(rmax), bool(bounded),
         int(max_iter), float(tol), cost, n_iter, status)
    return theta, cost, n_iter, status
