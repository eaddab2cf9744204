"""numba.cuda implementation of :func:`subspacelab.kernels.countsketch` (one group per thread)."""

import numpy as np
from numba import cuda

from ._rowsolve_core import compile_core

_countsketch_group = compile_core(cuda.jit(device=True)).countsketch_group
_THREADS = 64


@cuda.jit
def _countsketch(indptr, indices, data, F, seed, SA, Sb):
    g = cuda.grid(1)
    if g < SA.shape[0]:
        _countsketch_group(indptr, indices, data, F, g, seed, SA[g], Sb[g])


def countsketch_cuda(indptr, indices, data, F, s, seed):
    n_groups = int(indptr.shape[0]) - 1
    dt = np.dtype(F.dtype)
    SA = cuda.device_array((n_groups, s, int(F.shape[1])), dtype=dt)
    Sb = cuda.device_array((n_groups, s), dtype=dt)
    if n_groups:
        _countsketch[max(1, (n_groups + _THREADS - 1) // _THREADS), _THREADS](indptr, indices, data, F, np.int64(seed), SA, Sb)
    return SA, Sb
