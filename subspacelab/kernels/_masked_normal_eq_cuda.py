"""numba.cuda implementation of :func:`subspacelab.kernels.masked_normal_eq`.

One thread per group; its k x k and vector scratch live in global memory (one slice per
group of the launch). The per-group arithmetic is :mod:`._rowsolve_core`, the same source the
Numba CPU kernels compile. Groups are launched in chunks so that the sketch scratch stays
bounded.
"""

import numpy as np
from numba import cuda

from ._rowsolve_core import compile_core

_core = compile_core(cuda.jit(device=True))
_solve_exact = _core.solve_exact
_pcg = _core.pcg
_solve_sketch = _core.solve_sketch

_THREADS = 64
_MAX_SCRATCH = 1 << 24  # floats of scratch per launch


@cuda.jit
def _exact(indptr, indices, data, F, ridge, jitter_rel, start, stop, Gs, bs, out):
    t = cuda.grid(1)
    g = start + t
    if g < stop:
        _solve_exact(indptr, indices, data, F, g, ridge[g], jitter_rel, Gs[t], bs[t], out[g])


@cuda.jit
def _cg(indptr, indices, data, F, ridge, start, stop, n_steps, tol, L, vecs, out, steps):
    t = cuda.grid(1)
    g = start + t
    if g < stop:
        v = vecs[t]
        steps[g] = _pcg(indptr, indices, data, F, g, ridge[g], out[g], n_steps, tol, L, False, v[0], v[1], v[2], v[3])


@cuda.jit
def _sketch(indptr, indices, data, F, ridge, jitter_rel, seed, warm, start, stop, n_steps, tol, SAs, Sbs, Gs, vecs, out, steps):
    t = cuda.grid(1)
    g = start + t
    if g < stop:
        v = vecs[t]
        steps[g] = _solve_sketch(
            indptr, indices, data, F, g, ridge[g], jitter_rel, seed, out[g], warm, n_steps, tol,
            SAs[t], Sbs[t], Gs[t], v[0], v[1], v[2], v[3],
        )


def _launch_chunks(n_groups, per_group):
    chunk = max(1, min(n_groups, _MAX_SCRATCH // max(per_group, 1)))
    for start in range(0, n_groups, chunk):
        stop = min(n_groups, start + chunk)
        yield start, stop, stop - start, max(1, (stop - start + _THREADS - 1) // _THREADS)


def masked_normal_eq_cuda(indptr, indices, data, F, ridge, method, x0, n_steps, tol, s, seed, jitter_rel):
    """Device arrays in (numba device arrays), (solution, steps) device arrays out."""
    n_groups = int(indptr.shape[0]) - 1
    k = int(F.shape[1])
    dt = np.dtype(F.dtype)
    jitter_rel, tol = dt.type(jitter_rel), dt.type(tol)
    if not hasattr(ridge, "shape"):
        ridge = cuda.to_device(np.full(max(n_groups, 1), ridge, dtype=dt))
    steps = cuda.to_device(np.zeros(max(n_groups, 1), dtype=np.int64))
    if method == "exact":
        out = cuda.device_array((n_groups, k), dtype=dt)
    elif x0 is not None:
        out = cuda.device_array((n_groups, k), dtype=dt)
        out.copy_to_device(x0)
    else:
        out = cuda.to_device(np.zeros((n_groups, k), dtype=dt))
    if n_groups == 0:
        return out, steps
    if method == "exact":
        for start, stop, size, blocks in _launch_chunks(n_groups, k * k + k):
            Gs = cuda.device_array((size, k, k), dtype=dt)
            bs = cuda.device_array((size, k), dtype=dt)
            _exact[blocks, _THREADS](indptr, indices, data, F, ridge, jitter_rel, start, stop, Gs, bs, out)
    elif method == "cg":
        L = cuda.device_array((1, 1), dtype=dt)
        for start, stop, size, blocks in _launch_chunks(n_groups, 4 * k):
            vecs = cuda.device_array((size, 4, k), dtype=dt)
            _cg[blocks, _THREADS](indptr, indices, data, F, ridge, start, stop, n_steps, tol, L, vecs, out, steps)
    else:
        warm = x0 is not None
        for start, stop, size, blocks in _launch_chunks(n_groups, s * k + s + k * k + 4 * k):
            SAs = cuda.device_array((size, s, k), dtype=dt)
            Sbs = cuda.device_array((size, s), dtype=dt)
            Gs = cuda.device_array((size, k, k), dtype=dt)
            vecs = cuda.device_array((size, 4, k), dtype=dt)
            _sketch[blocks, _THREADS](
                indptr, indices, data, F, ridge, jitter_rel, np.int64(seed), warm, start, stop, n_steps, tol,
                SAs, Sbs, Gs, vecs, out, steps,
            )
    return out, steps
