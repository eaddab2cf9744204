"""Numba CPU implementation of :func:`subspacelab.kernels.countsketch` (one group per thread)."""

import numba
import numpy as np

from ._rowsolve_core import compile_core

_countsketch_group = compile_core(numba.njit(cache=True, nogil=True)).countsketch_group


def _countsketch(indptr, indices, data, F, seed, SA, Sb):
    for g in numba.prange(SA.shape[0]):
        _countsketch_group(indptr, indices, data, F, g, seed, SA[g], Sb[g])


_PAR = numba.njit(parallel=True, cache=True, nogil=True)(_countsketch)
_SER = numba.njit(parallel=False, cache=True, nogil=True)(_countsketch)


def countsketch_numba(indptr, indices, data, F, s, seed):
    n_groups = indptr.shape[0] - 1
    SA = np.empty((n_groups, s, F.shape[1]), dtype=F.dtype)
    Sb = np.empty((n_groups, s), dtype=F.dtype)
    fn = _PAR if indices.shape[0] * F.shape[1] >= 1_000_000 else _SER  # thread start-up vs work
    fn(indptr, indices, data, F, np.int64(seed), SA, Sb)
    return SA, Sb
