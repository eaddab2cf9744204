"""Numba CPU implementation of :func:`subspacelab.kernels.masked_normal_eq`.

One ``prange`` iteration per group (row of the CSR pattern); each owns its k x k and k-vector
scratch, so there is no sharing between threads and the result does not depend on the
thread count. Every loop is compiled twice, parallel and serial: starting the thread team
costs from tens of microseconds to milliseconds on a loaded machine, so problems below
``PARALLEL_MIN_WORK`` flops run serially (same arithmetic, same result). The per-group arithmetic is :mod:`._rowsolve_core`, shared with the CUDA kernels.
"""

import numba
import numpy as np

from ._rowsolve_core import compile_core

_core = compile_core(numba.njit(cache=True, nogil=True))
_solve_exact = _core.solve_exact
_pcg = _core.pcg
_solve_sketch = _core.solve_sketch

PARALLEL_MIN_WORK = 20_000_000


def _both(fn):
    """(parallel, serial) compilations of one prange loop."""
    return (
        numba.njit(parallel=True, cache=True, nogil=True)(fn),
        numba.njit(parallel=False, cache=True, nogil=True)(fn),
    )


def _pick(pair, work):
    return pair[0] if work >= PARALLEL_MIN_WORK else pair[1]


def _exact(indptr, indices, data, F, ridge, jitter_rel, out):
    k = F.shape[1]
    for g in numba.prange(out.shape[0]):
        G = np.empty((k, k), dtype=F.dtype)
        b = np.empty(k, dtype=F.dtype)
        _solve_exact(indptr, indices, data, F, g, ridge[g], jitter_rel, G, b, out[g])


def _cg(indptr, indices, data, F, ridge, out, n_steps, tol, steps):
    k = F.shape[1]
    for g in numba.prange(out.shape[0]):
        L = np.empty((1, 1), dtype=F.dtype)
        r = np.empty(k, dtype=F.dtype)
        z = np.empty(k, dtype=F.dtype)
        p = np.empty(k, dtype=F.dtype)
        q = np.empty(k, dtype=F.dtype)
        steps[g] = _pcg(indptr, indices, data, F, g, ridge[g], out[g], n_steps, tol, L, False, r, z, p, q)


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
            indptr, indices, data, F, g, ridge[g], jitter_rel, seed, out[g], warm, n_steps, tol, SA, Sb, G, r, z, p, q
        )


_EXACT = _both(_exact)
_CG = _both(_cg)
_SKETCH = _both(_sketch)


def masked_normal_eq_numba(indptr, indices, data, F, ridge, method, x0, n_steps, tol, s, seed, jitter_rel):
    """Host arrays in (``ridge`` a scalar or one value per group), (solution, steps) out."""
    n_groups = indptr.shape[0] - 1
    k = F.shape[1]
    dt = F.dtype
    ridge = np.ascontiguousarray(np.broadcast_to(np.asarray(ridge, dtype=dt), (n_groups,)))
    jitter_rel = dt.type(jitter_rel)
    tol = dt.type(tol)
    data = data.astype(dt, copy=False)
    steps = np.zeros(n_groups, dtype=np.int64)
    if method == "exact":
        out = np.empty((n_groups, k), dtype=dt)
        _pick(_EXACT, indices.shape[0] * k * k + n_groups * k**3)(indptr, indices, data, F, ridge, jitter_rel, out)
    elif method == "cg":
        out = np.array(x0, dtype=dt, copy=True) if x0 is not None else np.zeros((n_groups, k), dtype=dt)
        _pick(_CG, 4 * indices.shape[0] * k * max(n_steps, 1))(indptr, indices, data, F, ridge, out, n_steps, tol, steps)
    else:
        warm = x0 is not None
        out = np.array(x0, dtype=dt, copy=True) if warm else np.zeros((n_groups, k), dtype=dt)
        _pick(_SKETCH, 4 * indices.shape[0] * k * max(n_steps, 1) + n_groups * s * k * k)(indptr, indices, data, F, ridge, jitter_rel, np.int64(seed), out, warm, n_steps, tol, s, steps)
    return out, steps
