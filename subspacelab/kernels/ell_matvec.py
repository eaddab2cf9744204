"""Sparse matrix-vector products in ELL (padded row) format, gather only.

The CT projector (:class:`subspacelab.operators.ParallelBeamCT`) stores its system matrix as
two ELL tables, one per direction, built from the same weights; this kernel applies either.
Being gather-only it needs no atomics and is deterministic on every backend.
"""

from __future__ import annotations

from .._backend import get_namespace
from .._validation import check_array
from ._dispatch import from_cuda, from_host, select_backend, to_cuda, to_host

__all__ = ["ell_matvec"]

_BLOCK_ELEMENTS = 1 << 22  # gathered entries per block of the generic path (memory bound)


def ell_matvec(indices, weights, x, *, backend="auto"):
    r"""Apply a sparse matrix stored in ELL format to a batch of vectors.

    .. math::

        y_{b, r} = \sum_{j < k} w_{r j}\, x_{b,\, i_{r j}},

    i.e. ``y = x @ M.T`` for the ``n_out x n_in`` matrix ``M`` whose row ``r`` holds the
    values ``weights[r]`` at the columns ``indices[r]`` (padding slots carry weight 0).

    Parameters
    ----------
    indices : integer array of shape (n_out, k)
        Column indices, in ``[0, n_in)``.
    weights : real array of shape (n_out, k)
        Entry values; cast to the dtype of ``x``.
    x : real floating array of shape ``(*batch, n_in)``
    backend : {"auto", "generic", "numba", "cuda"}

    Returns
    -------
    array of shape ``(*batch, n_out)``
        In the namespace, device and dtype of ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.kernels import ell_matvec
    >>> idx = np.array([[0, 2], [1, 0]], dtype=np.int32)
    >>> w = np.array([[1.0, 2.0], [3.0, 0.0]])
    >>> ell_matvec(idx, w, np.array([1.0, 10.0, 100.0]))
    array([201.,  30.])
    """
    xp, dev = check_array(x, "x", min_ndim=1, allow_empty=False)
    get_namespace(indices, weights, x, names=["indices", "weights", "x"])
    if indices.ndim != 2 or tuple(weights.shape) != tuple(indices.shape):
        raise ValueError(
            f"indices and weights must be 2-D of one shape, got {tuple(indices.shape)} and {tuple(weights.shape)}"
        )
    if not xp.isdtype(indices.dtype, "integral"):
        raise TypeError(f"indices must be an integer array, got {indices.dtype}")
    impl = select_backend(x, backend)
    if impl == "generic":
        return _generic(indices, weights, x, xp)
    batch, n_in = tuple(x.shape[:-1]), x.shape[-1]
    if impl == "numba":
        from ._ell_matvec_numba import ell_matvec_numba

        ih, wh, xh = to_host(indices, weights, x)
        out = ell_matvec_numba(ih, wh.astype(xh.dtype, copy=False), xh.reshape(-1, n_in))
        return from_host(out.reshape(*batch, indices.shape[0]), xp, dev)
    from ._ell_matvec_cuda import ell_matvec_cuda

    ww = weights if weights.dtype == x.dtype else xp.astype(weights, x.dtype)
    idd, wd, xd = to_cuda(indices, ww, xp.reshape(x, (-1, n_in)))
    out = from_cuda(ell_matvec_cuda(idd, wd, xd), x, xp, dev)
    return xp.reshape(out, (*batch, indices.shape[0]))


def _generic(indices, weights, x, xp):
    """Array-API reference: gather, multiply, sum (row blocks bound the memory)."""
    n_out, k = indices.shape
    batch, n_in = tuple(x.shape[:-1]), x.shape[-1]
    xb = xp.reshape(x, (-1, n_in))
    w = weights if weights.dtype == x.dtype else xp.astype(weights, x.dtype)
    rows = max(1, _BLOCK_ELEMENTS // max(1, k * xb.shape[0]))
    parts = []
    for start in range(0, n_out, rows):
        stop = min(n_out, start + rows)
        idx = xp.reshape(indices[start:stop, :], (-1,))
        g = xp.reshape(xp.take(xb, idx, axis=1), (xb.shape[0], stop - start, k))
        parts.append(xp.sum(g * w[start:stop, :], axis=-1))
    y = parts[0] if len(parts) == 1 else xp.concat(parts, axis=1)
    return xp.reshape(y, (*batch, n_out))

