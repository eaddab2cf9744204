"""Numba CPU implementation of :func:`subspacelab.kernels.masked_normal_eq`.

One ``prange`` iteration per group (row of the CSR pattern); each owns its k x k and k-vector
scratch, so there is no sharing between threads and the result does not depend on the
thread count. The per-group arithmetic is :mod:`._rowsolve_core`, shared with the CUDA kernels.
"""

import numba
import numpy as np

from ._rowsolve_core import compile_core

_core = compile_core(numba.njit(cache=True, nogil=True))
_solve_exact = _core.solve_exact
_pcg = _core.pcg
_solve_sketch = _core.solve_sketch


@numba.njit(parallel=True, cache=True, nogil=True)
def _exact(indptr, indices, data, F, ridge, jitter_rel, out):
    k = F.shape[1]
    for g in numba.prange(out.shape[0]):
        G = np.empty((k, k), dtype=F.dtype)
        b = np.empty(k, dtype=F.dtype)
        _solve_exact(indptr, indices, data, F, g, ridge, jitter_rel, G, b, out[g])


@numba.njit(parallel=True, cache=True, nogil=True)
def _cg(indptr, indices, data, F, ridge, out, n_steps, tol, steps):
    k = F.shape[1]
    for g in numba.prange(out.shape[0]):
        L = np.empty((1, 1), dtype=F.dtype)
        r = np.empty(k, dtype=F.dtype)
        z = np.empty(k, dtype=F.dtype)
        p = np.empty(k, dtype=F.dtype)
        q = np.empty(k, dtype=F.dtype)
        steps[g] = _pcg(indptr, indices, data, F, g, ridge, out[g], n_steps, tol, L, False, r, z, p, q)


@numba.njit(parallel=True, cache=True, nogil=True)
def _sketch(indptr, indices, data, F, ridge, jitter_rel, seed, out, warm, n_steps, tol, s, steps):
    k = F.shape[1]
    for g in numba.prange(out.shape[0]):
        SA = np.empty((s, k), dtype=F.dtype)
        Sb = np.empty(s, dtype=F.dtype)
        G = np.empty((k, k), dtype=F.dtype)
        r = np.empty(k, dtype=F.dtype)
        z = np.empty(k, dtype=F.dtype)
        p = np.empty(k, dtype=F.dtype)
        q = np.empty(k, dtype=F.dtype)
        steps[g] = _solve_sketch(
            indptr, indices, data, F, g, ridge, jitter_rel, seed, out[g], warm, n_steps, tol, SA, Sb, G, r, z, p, q
        )


def masked_normal_eq_numba(indptr, indices, data, F, ridge, method, x0, n_steps, tol, s, seed, jitter_rel):
    """Host arrays in, (solution, inner steps per group) out."""
    n_groups = indptr.shape[0] - 1
    k = F.shape[1]
    dt = F.dtype
    ridge = dt.type(ridge)
    jitter_rel = dt.type(jitter_rel)
    tol = dt.type(tol)
    data = data.astype(dt, copy=False)
    steps = np.zeros(n_groups, dtype=np.int64)
    if method == "exact":
        out = np.empty((n_groups, k), dtype=dt)
        _exact(indptr, indices, data, F, ridge, jitter_rel, out)
    elif method == "cg":
        out = np.array(x0, dtype=dt, copy=True) if x0 is not None else np.zeros((n_groups, k), dtype=dt)
        _cg(indptr, indices, data, F, ridge, out, n_steps, tol, steps)
    else:
        warm = x0 is not None
        out = np.array(x0, dtype=dt, copy=True) if warm else np.zeros((n_groups, k), dtype=dt)
        _sketch(indptr, indices, data, F, ridge, jitter_rel, np.int64(seed), out, warm, n_steps, tol, s, steps)
    return out, steps
