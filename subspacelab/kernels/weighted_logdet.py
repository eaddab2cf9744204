r"""Log-determinants of many weighted Gram matrices: the n coding-rate terms of MLC's R^c."""

from __future__ import annotations

from typing import NamedTuple

from .._backend import get_namespace
from .._validation import check_array, check_param
from ._dispatch import _FORCED, from_cuda, from_host, select_backend, to_cuda, to_host

__all__ = ["WeightedLogdetResult", "weighted_logdet"]

# Bound on the elements of the generic path's intermediates (32 MiB in float64).
_MAX_CHUNK_ELEMENTS = 1 << 22


class WeightedLogdetResult(NamedTuple):
    r"""Result of :func:`weighted_logdet`.

    Attributes
    ----------
    logdet : array, shape (m,)
        :math:`\log\det M_j`.
    quadratic : array of shape (n, m), or None
        :math:`z_i^\top M_j^{-1} z_i` when ``return_quadratic`` was set.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.kernels import WeightedLogdetResult, weighted_logdet
    >>> res = weighted_logdet(np.eye(2), np.array([[1.0, 0.5], [0.0, 0.5]]), 2.0)
    >>> isinstance(res, WeightedLogdetResult), res.quadratic is None
    (True, True)
    >>> np.round(np.exp(res.logdet), 6)
    array([3., 4.])
    """

    logdet: object
    quadratic: object


def weighted_logdet(Z, weights, scale=1.0, *, return_quadratic=False, backend="auto"):
    r"""Log-determinants of :math:`M_j = I_d + s \sum_i W_{ij}\, z_i z_i^\top`, one per column of W.

    With ``Z`` holding samples :math:`z_i` as rows and ``weights`` :math:`W \ge 0` of shape
    (n, m), this returns :math:`\log\det M_j` for :math:`j = 1..m` and, optionally, the
    quadratic forms :math:`q_{ij} = z_i^\top M_j^{-1} z_i`. These are the building blocks of
    the compressed coding rate with a membership matrix :math:`\Gamma` (MLC's :math:`R^c`, one
    term per column of :math:`\Gamma`),

    .. math::

        R^c(Z, \Gamma) = \sum_j \frac{t_j}{2n}\log\det\!\Big(I + \frac{d}{t_j\varepsilon^2}
            Z^\top \operatorname{diag}(\Gamma_{:,j}) Z\Big), \qquad
        \frac{\partial R^c}{\partial \Gamma_{ij}}\Big|_{t \text{ fixed}} =
            \frac{d}{2n\varepsilon^2}\, z_i^\top M_j^{-1} z_i,

    (``weights = Γ / t``, ``scale = d / ε²``). Every :math:`M_j` is symmetric positive definite,
    so its log-determinant is :math:`2\sum\log\operatorname{diag}` of its Cholesky factor.

    The official MLC/CPP code builds the products by broadcasting an (n, d, n) array, O(n²d)
    memory. Here the generic path writes the sums as matrix products with the (n, d²) outer
    products of the rows (in chunks of at most about 4·10⁶ elements), the Numba path builds one :math:`d\times d` matrix per column
    and thread (O(d²) extra memory per thread), and the CUDA path keeps only the (m, d, d)
    matrices.

    Parameters
    ----------
    Z : array of shape (n, d)
        Real floating, finite.
    weights : array of shape (n, m)
        Nonnegative, finite, of the namespace and device of ``Z``.
    scale : float, default=1.0
        :math:`s > 0`.
    return_quadratic : bool, default=False
        Also return :math:`q_{ij} = z_i^\top M_j^{-1} z_i`.
    backend : {"auto", "generic", "numba", "cuda"}
        Implementation (see :mod:`subspacelab.kernels`). Unlike the other kernels, ``"auto"``
        always picks the generic path (which keeps torch autograd): written as matrix products
        it was 4-8x faster than the Numba path on the CPU for n = 512-1024, d = 32-64 (equal
        at n = 256), and 2.5-36x faster than :func:`subspacelab.rate.compressed_coding_rate`
        for n >= 512 (slower at n = 256) (``benchmarks/weighted_logdet.py``, shared 2-core
        machine). The Numba path (O(d²)
        memory per column) and the CUDA path (only the (m, d, d) matrices stored; not timed on
        a GPU yet) are used when asked for by ``backend=`` or
        :func:`~subspacelab.kernels.kernel_backend`.

    Returns
    -------
    WeightedLogdetResult
        ``logdet`` of shape (m,) and ``quadratic`` of shape (n, m) or None, in the namespace,
        on the device and with the common floating dtype of the inputs.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.kernels import weighted_logdet
    >>> Z = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> W = np.array([[1.0, 0.5], [0.0, 0.5]])
    >>> res = weighted_logdet(Z, W, 2.0, return_quadratic=True)
    >>> np.round(res.logdet, 6)  # log 3 and log 4
    array([1.098612, 1.386294])
    >>> np.round(res.quadratic, 6)
    array([[0.333333, 0.5     ],
           [1.      , 0.5     ]])
    """
    xp, dev = check_array(Z, "Z", ndim=2)
    check_array(weights, "weights", ndim=2)
    get_namespace(Z, weights, names=["Z", "weights"])
    if weights.shape[0] != Z.shape[0]:
        raise ValueError(
            f"weights must have one row per row of Z: got shapes {tuple(weights.shape)} and {tuple(Z.shape)}"
        )
    if bool(xp.any(weights < 0)):
        raise ValueError("weights must be nonnegative")
    scale = float(check_param("scale", scale, "real", low=0.0, closed="neither"))
    check_param("return_quadratic", return_quadratic, "bool")
    dtype = xp.result_type(Z.dtype, weights.dtype)
    if Z.dtype != dtype:
        Z = xp.astype(Z, dtype)
    if weights.dtype != dtype:
        weights = xp.astype(weights, dtype)
    # "auto" means the generic path here: its matrix products beat the per-column Numba loops
    # on the CPU (benchmarks/weighted_logdet.py); the other paths are chosen explicitly.
    impl = "generic" if backend == "auto" and _FORCED.get() is None else select_backend(Z, backend)
    if impl == "generic":
        logdet, quad = _generic(Z, weights, scale, return_quadratic, xp, dev)
    elif impl == "numba":
        from ._weighted_logdet_numba import weighted_logdet_numba

        zh, wh = to_host(Z, weights)
        logdet, quad = weighted_logdet_numba(zh, wh, scale, return_quadratic)
        logdet, quad = from_host((logdet, quad), xp, dev)
    else:
        from ._weighted_logdet_cuda import weighted_logdet_cuda

        zd, wd = to_cuda(Z, weights)
        logdet, quad = weighted_logdet_cuda(zd, wd, scale, return_quadratic)
        logdet, quad = from_cuda((logdet, quad), Z, xp, dev)
    return WeightedLogdetResult(logdet, quad)


def _generic(Z, W, scale, return_quadratic, xp, dev):
    """Array-API reference. With P the (n, d*d) matrix of flattened outer products z_i z_i^T,
    the stacked M_j are I + s reshape(W^T P) and q = P vec(M_j^{-1}): plain matrix products
    (which torch differentiates cheaply), over chunks of rows and columns whose operands hold
    at most ``_MAX_CHUNK_ELEMENTS`` elements."""
    n, d = Z.shape
    m = W.shape[1]
    dd = d * d
    step = max(1, _MAX_CHUNK_ELEMENTS // dd)
    row_chunks = [(i0, min(n, i0 + step)) for i0 in range(0, n, step)]

    def outer(i0, i1):
        Zi = Z[i0:i1, :]
        return xp.reshape(Zi[:, :, None] * Zi[:, None, :], (i1 - i0, dd))

    P_all = outer(0, n) if len(row_chunks) == 1 else None
    eye = xp.eye(d, dtype=Z.dtype, device=dev)
    logdets, quads = [], []
    for j0 in range(0, m, step):
        j1 = min(m, j0 + step)
        acc = None
        for i0, i1 in row_chunks:
            P = P_all if P_all is not None else outer(i0, i1)
            term = xp.matrix_transpose(W[i0:i1, j0:j1]) @ P  # (c, d*d)
            acc = term if acc is None else acc + term
        M = eye + scale * xp.reshape(acc, (j1 - j0, d, d))
        L = xp.linalg.cholesky(M)
        logdets.append(2.0 * xp.sum(xp.log(xp.linalg.diagonal(L)), axis=-1))
        if return_quadratic:
            Minv = xp.reshape(xp.linalg.inv(M), (j1 - j0, dd))
            parts = [(P_all if P_all is not None else outer(i0, i1)) @ xp.matrix_transpose(Minv) for i0, i1 in row_chunks]
            quads.append(xp.concat(parts, axis=0) if len(parts) > 1 else parts[0])
    logdet = xp.concat(logdets)
    quad = xp.concat(quads, axis=1) if return_quadratic else None
    return logdet, quad
