"""numba.cuda implementation of :func:`subspacelab.kernels.sinkhorn`.

One thread per row (then per column, on a transposed copy) computes a log-sum-exp and the
marginal deviation of that row; the host loop checks convergence from the per-row deviations.
"""

import math

import numpy as np
from numba import cuda

_THREADS = 128


@cuda.jit
def _half(k, pot_other, pot, err, log_c):
    idx = cuda.grid(1)
    bsz, r, s = k.shape
    if idx < bsz * r:
        b = idx // r
        i = idx - b * r
        mx = -math.inf
        acc = 0.0
        for j in range(s):  # one-pass log-sum-exp
            v = k[b, i, j] + pot_other[b, j]
            if v > mx:
                acc = acc * math.exp(mx - v) + 1.0
                mx = v
            else:
                acc += math.exp(v - mx)
        new = log_c - (mx + math.log(acc))
        err[idx] = abs(math.exp(pot[b, i] - new) - 1.0)
        pot[b, i] = new


@cuda.jit
def _scale_transpose(a, inv_eta, k, kt):
    idx = cuda.grid(1)
    bsz, n, m = a.shape
    if idx < bsz * n * m:
        b = idx // (n * m)
        rem = idx - b * n * m
        i = rem // m
        j = rem - i * m
        v = a[b, i, j] * inv_eta
        k[b, i, j] = v
        kt[b, j, i] = v


@cuda.jit
def _plan(k, f, g, eta, out, f_out, g_out):
    idx = cuda.grid(1)
    bsz, n, m = k.shape
    if idx < bsz * n * m:
        b = idx // (n * m)
        rem = idx - b * n * m
        i = rem // m
        j = rem - i * m
        out[b, i, j] = math.exp(k[b, i, j] + f[b, i] + g[b, j])
        if j == 0:
            f_out[b, i] = f[b, i] * eta
        if i == 0:
            g_out[b, j] = g[b, j] * eta


def _blocks(size):
    return max(1, (size + _THREADS - 1) // _THREADS)


def sinkhorn_cuda(a, eta, n_iter, tol):
    """``a`` is a numba device array of shape (..., n, m); returns device arrays."""
    shape = tuple(a.shape)  # the simulator's shape objects take no negative indices
    batch_shape, (n, m) = shape[:-2], shape[-2:]
    bsz = int(np.prod(batch_shape)) if batch_shape else 1
    dt = a.dtype
    a3 = a.reshape(bsz, n, m)
    k = cuda.device_array((bsz, n, m), dtype=dt)
    kt = cuda.device_array((bsz, m, n), dtype=dt)
    _scale_transpose[_blocks(bsz * n * m), _THREADS](a3, dt.type(1.0 / eta), k, kt)
    f = cuda.to_device(np.zeros((bsz, n), dtype=dt))
    g = cuda.to_device(np.zeros((bsz, m), dtype=dt))
    f_prev = cuda.device_array_like(f)
    g_prev = cuda.device_array_like(g)
    err_r = cuda.device_array(bsz * n, dtype=dt)
    err_c = cuda.device_array(bsz * m, dtype=dt)
    log_c = math.log(n / m)
    err = math.inf
    it = 0
    while it < n_iter:
        rows = it % 2 == 0
        if rows:
            f_prev.copy_to_device(f)
            _half[_blocks(bsz * n), _THREADS](k, g, f, err_r, dt.type(0.0))
        else:
            g_prev.copy_to_device(g)
            _half[_blocks(bsz * m), _THREADS](kt, f, g, err_c, dt.type(log_c))
        if tol is not None and it > 0:
            e = err_r.copy_to_host().max() if rows else err_c.copy_to_host().max() * (n / m)
            err = float(e)
            if err <= tol:
                if rows:
                    f.copy_to_device(f_prev)
                else:
                    g.copy_to_device(g_prev)
                break
        it += 1
    plan = cuda.device_array((bsz, n, m), dtype=dt)
    f_out = cuda.device_array((bsz, n), dtype=dt)
    g_out = cuda.device_array((bsz, m), dtype=dt)
    _plan[_blocks(bsz * n * m), _THREADS](k, f, g, dt.type(eta), plan, f_out, g_out)
    if tol is None or err > tol:
        p = plan.copy_to_host()
        err = float(max(np.abs(p.sum(axis=-1) - 1.0).max(), np.abs(p.sum(axis=-2) - n / m).max()))
    return (
        plan.reshape(batch_shape + (n, m)),
        f_out.reshape(batch_shape + (n,)),
        g_out.reshape(batch_shape + (m,)),
        it,
        err,
    )
