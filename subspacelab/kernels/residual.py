"""Residuals of a factorisation at sampled entries."""

from __future__ import annotations

from .._backend import get_namespace
from ._dispatch import from_cuda, from_host, select_backend, to_cuda, to_host

__all__ = ["sampled_residual"]


def sampled_residual(rows, cols, values, row_factors, col_factors, *, backend="auto", check_input=True):
    r"""Residual of :math:`U V^\top` at the observed entries: :math:`r_p = m_p - u_{i_p} \cdot v_{j_p}`.

    Costs :math:`O(|\Omega| k)` and never forms :math:`U V^\top` (the "verification" cost of
    a candidate factorisation in Gu et al.). ``values`` of zeros gives minus the predicted
    entries.

    Parameters
    ----------
    rows, cols : int arrays, shape (nnz,)
        Entry coordinates, ``0 <= rows < m`` and ``0 <= cols < n``.
    values : float array, shape (nnz,)
        Observed values :math:`m_p`.
    row_factors : float array, shape (m, k)
    col_factors : float array, shape (n, k)
    backend : {"auto", "generic", "numba", "cuda"}
    check_input : bool, default True
        Validate shapes and index ranges.

    Returns
    -------
    array, shape (nnz,)
        In the namespace, device and dtype of ``row_factors``.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.kernels import sampled_residual
    >>> U = np.array([[1.0, 0.0], [0.0, 2.0]]); V = np.array([[1.0, 1.0], [3.0, 0.0]])
    >>> sampled_residual(np.array([0, 1, 1]), np.array([1, 0, 1]), np.array([4.0, 2.0, 1.0]), U, V)
    array([1., 0., 1.])
    """
    xp, dev = get_namespace(rows, cols, values, row_factors, col_factors, names=["rows", "cols", "values", "row_factors", "col_factors"])
    if check_input:
        _check(rows, cols, values, row_factors, col_factors, xp)
    impl = select_backend(row_factors, backend)
    if impl == "generic":
        return _generic(rows, cols, values, row_factors, col_factors, xp)
    if impl == "numba":
        from ._residual_numba import sampled_residual_numba

        r, c, v, U, V = to_host(rows, cols, values, row_factors, col_factors)
        return from_host(sampled_residual_numba(r, c, v.astype(U.dtype, copy=False), U, V), xp, dev)
    from ._residual_cuda import sampled_residual_cuda

    r, c, v, U, V = to_cuda(rows, cols, xp.astype(values, row_factors.dtype), row_factors, col_factors)
    return from_cuda(sampled_residual_cuda(r, c, v, U, V), row_factors, xp, dev)


def _check(rows, cols, values, U, V, xp):
    if rows.ndim != 1 or cols.ndim != 1 or values.ndim != 1 or not (rows.shape[0] == cols.shape[0] == values.shape[0]):
        raise ValueError(
            f"rows, cols and values must be 1-D of one length, got shapes {tuple(rows.shape)}, "
            f"{tuple(cols.shape)}, {tuple(values.shape)}"
        )
    if U.ndim != 2 or V.ndim != 2 or U.shape[1] != V.shape[1]:
        raise ValueError(f"row_factors and col_factors must be 2-D with equal columns, got {tuple(U.shape)} and {tuple(V.shape)}")
    for name, a, hi in (("rows", rows, U.shape[0]), ("cols", cols, V.shape[0])):
        if not xp.isdtype(a.dtype, "integral"):
            raise TypeError(f"{name} must have an integer dtype, got {a.dtype}")
        if a.shape[0] and (bool(xp.any(a < 0)) or bool(xp.any(a >= hi))):
            raise ValueError(f"{name} must lie in [0, {hi})")


def _generic(rows, cols, values, U, V, xp):
    pred = xp.sum(xp.take(U, rows, axis=0) * xp.take(V, cols, axis=0), axis=1)
    return xp.astype(values, U.dtype) - pred
