"""Numba CPU implementation of :func:`subspacelab.kernels.soft_threshold` (one fused pass)."""

import numba
import numpy as np


@numba.njit(parallel=True, cache=True, nogil=True)
def _signed(flat, lam, out):
    for i in numba.prange(flat.size):
        v = flat[i]
        a = abs(v) - lam
        if a > 0:
            out[i] = a if v > 0 else -a
        else:
            out[i] = 0.0 * v  # keeps the sign of zero like the generic path


@numba.njit(parallel=True, cache=True, nogil=True)
def _nonneg(flat, lam, out):
    for i in numba.prange(flat.size):
        a = flat[i] - lam
        out[i] = a if a > 0 else 0.0


# Below this many elements one thread does the pass: the hand-off to a second thread costs more.
_PARALLEL_MIN_ELEMENTS = 1 << 18


def soft_threshold_numba(x, lam, nonnegative):
    flat = x.reshape(-1)
    out = np.empty_like(flat)
    lam = x.dtype.type(lam)
    threads = numba.get_num_threads()
    numba.set_num_threads(1 if flat.size < _PARALLEL_MIN_ELEMENTS else threads)
    try:
        (_nonneg if nonnegative else _signed)(flat, lam, out)
    finally:
        numba.set_num_threads(threads)
    return out.reshape(x.shape)
