"""Numba CPU implementation of :func:`subspacelab.kernels.countsketch` (one group per thread)."""

import numba
import numpy as np

from ._rowsolve_core import compile_core

_countsketch_group = compile_core(numba.njit(cache=True, nogil=True)).countsketch_group


@numba.njit(parallel=True, cache=True, nogil=True)
def _countsketch(indptr, indices, data, F, seed, SA, Sb):
    for g in numba.prange(SA.shape[0]):
        _countsketch_group(indptr, indices, data, F, g, seed, SA[g], Sb[g])


def countsketch_numba(indptr, indices, data, F, s, seed):
    n_groups = indptr.shape[0] - 1
    SA = np.empty((n_groups, s, F.shape[1]), dtype=F.dtype)
    Sb = np.empty((n_groups, s), dtype=F.dtype)
    _countsketch(indptr, indices, data, F, np.int64(seed), SA, Sb)
    return SA, Sb
