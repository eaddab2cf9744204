"""Numba CPU implementation of :func:`subspacelab.kernels.sinkhorn`.

Same iteration as the generic path, on scaled potentials F = f/eta, G = g/eta. The whole loop runs in
compiled code; rows of the whole batch are updated in one parallel loop, then columns (on a
transposed copy, so that both passes read contiguous memory).
"""

import math

import numba
import numpy as np

# Below this many matrix entries a half-iteration runs on one thread (measured: at 24 x 24 the
# two-thread version was slower than the generic NumPy path by orders of magnitude under load).
_PARALLEL_MIN_ELEMENTS = 1 << 15


@numba.njit(parallel=True, cache=True, nogil=True)
def _half(k, pot_other, pot, err, log_c):
    # k: (B, r, s) scaled log-affinity laid out so that the reduction runs over the last axis.
    # pot: (B, r) potential updated in place; pot_other: (B, s); err[b*r + i] = |ratio - 1|.
    # One-pass log-sum-exp: a running maximum rescales the running sum, one exp per entry.
    bsz, r, s = k.shape
    for idx in numba.prange(bsz * r):
        b = idx // r
        i = idx - b * r
        mx = -np.inf
        acc = 0.0
        for j in range(s):
            v = k[b, i, j] + pot_other[b, j]
            if v > mx:
                acc = acc * math.exp(mx - v) + 1.0
                mx = v
            else:
                acc += math.exp(v - mx)
        new = log_c - (mx + math.log(acc))
        err[idx] = abs(math.exp(pot[b, i] - new) - 1.0)
        pot[b, i] = new


@numba.njit(cache=True, nogil=True)
def _loop(k, kt, f, g, n_iter, tol, check, log_c, ratio):
    """All half-iterations in compiled code; returns (half-iterations done, last error)."""
    bsz, n, m = k.shape
    f_prev = np.empty_like(f)
    g_prev = np.empty_like(g)
    err_r = np.empty(bsz * n, dtype=k.dtype)
    err_c = np.empty(bsz * m, dtype=k.dtype)
    err = np.inf
    it = 0
    while it < n_iter:
        rows = it % 2 == 0
        if rows:
            f_prev[...] = f
            _half(k, g, f, err_r, 0.0)
        else:
            g_prev[...] = g
            _half(kt, f, g, err_c, log_c)
        if check and it > 0:
            err = err_r.max() if rows else err_c.max() * ratio
            if err <= tol:
                # the update was measured, not wanted: restore the potentials it replaced
                if rows:
                    f[...] = f_prev
                else:
                    g[...] = g_prev
                break
        it += 1
    return it, err


@numba.njit(parallel=True, cache=True, nogil=True)
def _plan(k, f, g, out):
    bsz, n, m = k.shape
    for idx in numba.prange(bsz * n):
        b = idx // n
        i = idx - b * n
        for j in range(m):
            out[b, i, j] = math.exp(k[b, i, j] + f[b, i] + g[b, j])


def sinkhorn_numba(a, eta, n_iter, tol):
    batch_shape = a.shape[:-2]
    n, m = a.shape[-2:]
    k = (a / a.dtype.type(eta)).reshape((-1, n, m))
    kt = np.ascontiguousarray(np.swapaxes(k, 1, 2))
    bsz = k.shape[0]
    f = np.zeros((bsz, n), dtype=a.dtype)
    g = np.zeros((bsz, m), dtype=a.dtype)
    log_c = math.log(n / m)
    check = tol is not None
    # Each half-iteration is one parallel region; for small problems the threads' hand-off costs
    # more than the work (and on a busy machine they wait on each other), so run them on one.
    threads = numba.get_num_threads()
    numba.set_num_threads(1 if bsz * n * m < _PARALLEL_MIN_ELEMENTS else threads)
    try:
        it, err = _loop(k, kt, f, g, n_iter, tol if check else 0.0, check, log_c, n / m)
        plan = np.empty_like(k)
        _plan(k, f, g, plan)
    finally:
        numba.set_num_threads(threads)
    err = float(err)
    if tol is None or err > tol:
        rows_err = np.abs(plan.sum(axis=-1) - 1.0).max()
        cols_err = np.abs(plan.sum(axis=-2) - n / m).max()
        err = float(max(rows_err, cols_err))
    eta_t = a.dtype.type(eta)
    return (
        plan.reshape(batch_shape + (n, m)),
        (f * eta_t).reshape(batch_shape + (n,)),
        (g * eta_t).reshape(batch_shape + (m,)),
        int(it),
        err,
    )
