"""Log-domain Sinkhorn scaling to a (doubly) stochastic matrix, batched over leading axes."""

from __future__ import annotations

import math
from typing import NamedTuple

from .._backend import as_float
from .._validation import check_array, check_param
from ._dispatch import from_cuda, from_host, select_backend, to_cuda, to_host

__all__ = ["SinkhornResult", "sinkhorn"]


class SinkhornResult(NamedTuple):
    """Result of :func:`sinkhorn`.

    Attributes
    ----------
    plan : array, shape (..., n, m)
        Gamma = exp((log_affinity + f[..., :, None] + g[..., None, :]) / eta); rows sum to 1 and
        columns to n/m (doubly stochastic when n == m).
    row_potential : array, shape (..., n)
        f, in the units of ``log_affinity``.
    col_potential : array, shape (..., m)
        g, in the units of ``log_affinity``.
    n_iter : int
        Half-iterations (row or column updates) performed.
    marginal_error : float
        Largest deviation of a row or column sum from its target, over the batch, at return.
        It is measured before the last scheduled update was skipped or applied, so it is exact
        for the returned plan up to rounding.
    converged : bool
        ``marginal_error <= tol`` (always False when ``tol`` is None, since no test was made).

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.kernels import SinkhornResult, sinkhorn
    >>> res = sinkhorn(np.array([[1.0, 0.2], [0.2, 1.0]]), eta=0.175)
    >>> isinstance(res, SinkhornResult), bool(res.converged)
    (True, True)
    >>> np.round(res.plan.sum(axis=0), 6)  # doubly stochastic
    array([1., 1.])
    """

    plan: object
    row_potential: object
    col_potential: object
    n_iter: int
    marginal_error: float
    converged: bool


def sinkhorn(log_affinity, eta=1.0, n_iter=1000, tol=1e-9, *, backend="auto"):
    r"""Entropic optimal transport with uniform marginals, in the log domain.

    Solves, for each matrix :math:`A` of the batch,

    .. math::

        \Gamma = \arg\max_{\Gamma \ge 0,\ \Gamma 1 = 1,\ \Gamma^\top 1 = \tfrac{n}{m} 1}
        \langle A, \Gamma\rangle - \eta \sum_{ij} \Gamma_{ij} \log \Gamma_{ij},

    whose solution is :math:`\Gamma_{ij} = \exp((A_{ij} + f_i + g_j)/\eta)`. Half-iterations
    alternate, starting with the rows:

    .. math::

        f_i \leftarrow -\eta \operatorname{LSE}_j \frac{A_{ij} + g_j}{\eta}, \qquad
        g_j \leftarrow \eta \log\tfrac{n}{m} - \eta \operatorname{LSE}_i \frac{A_{ij} + f_i}{\eta}.

    After a row update the row sums are exact, after a column update the column sums. Before
    each update the deviation of the marginal it would fix is measured at no extra cost (it is
    :math:`c\,|e^{(g^{old}-g^{new})/\eta} - 1|`), and the loop stops once that deviation is at
    most ``tol``: the returned plan then has one marginal exact and the other within ``tol``.
    MLC's official code runs exactly 5 half-iterations from zero potentials (rows exact,
    columns approximate); ``n_iter=5, tol=None`` reproduces that.

    Parameters
    ----------
    log_affinity : array, shape (..., n, m)
        Real floating, finite. Leading axes are a batch.
    eta : float, default 1.0
        Entropic temperature, > 0. Small ``eta`` approaches the unregularised assignment.
    n_iter : int, default 1000
        Maximum number of half-iterations (>= 1).
    tol : float or None, default 1e-9
        Stop when the marginal error is at most ``tol``; None runs exactly ``n_iter``
        half-iterations. float32 input cannot reach tolerances much below 1e-6.
    backend : {"auto", "generic", "numba", "cuda"}
        Implementation (see :mod:`subspacelab.kernels`). The generic one keeps torch autograd.

    Returns
    -------
    SinkhornResult
        ``plan``, ``row_potential``, ``col_potential`` in the caller's namespace and device,
        and ``n_iter``, ``marginal_error``, ``converged``.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.kernels import sinkhorn
    >>> res = sinkhorn(np.array([[1.0, 0.2], [0.2, 1.0]]), eta=0.175)
    >>> np.round(res.plan, 5)
    array([[0.98976, 0.01024],
           [0.01024, 0.98976]])
    >>> res.converged
    True
    """
    xp, dev = check_array(log_affinity, "log_affinity", min_ndim=2)
    check_param("eta", eta, "real", low=0.0, closed="neither")
    check_param("n_iter", n_iter, "int", low=1)
    check_param("tol", tol, "real", low=0.0, allow_none=True)
    eta, n_iter = float(eta), int(n_iter)
    tol = None if tol is None else float(tol)
    impl = select_backend(log_affinity, backend)
    if impl == "generic":
        plan, f, g, it, err = _generic(log_affinity, eta, n_iter, tol, xp)
    elif impl == "numba":
        from ._sinkhorn_numba import sinkhorn_numba

        (ah,) = to_host(log_affinity)
        plan, f, g, it, err = sinkhorn_numba(ah, eta, n_iter, tol)
        plan, f, g = from_host((plan, f, g), xp, dev)
    else:
        from ._sinkhorn_cuda import sinkhorn_cuda

        (ad,) = to_cuda(log_affinity)
        plan, f, g, it, err = sinkhorn_cuda(ad, eta, n_iter, tol)
        plan, f, g = from_cuda((plan, f, g), log_affinity, xp, dev)
    converged = tol is not None and err <= tol
    return SinkhornResult(plan, f, g, it, err, converged)


def _lse(x, axis, xp):
    """log-sum-exp along ``axis`` with the max shift (not part of the array API standard)."""
    m = xp.max(x, axis=axis, keepdims=True)
    return xp.squeeze(m, axis=axis) + xp.log(xp.sum(xp.exp(x - m), axis=axis))


def _generic(a, eta, n_iter, tol, xp):
    """Array-API reference implementation; differentiable by torch autograd."""
    n, m = a.shape[-2], a.shape[-1]
    log_c = math.log(n / m)
    k = a / eta
    f = xp.zeros_like(k[..., 0])  # (..., n), scaled by 1/eta
    g = xp.zeros_like(k[..., 0, :])  # (..., m)
    err = math.inf
    it = 0
    while it < n_iter:
        if it % 2 == 0:
            new = -_lse(k + g[..., None, :], -1, xp)
            target, old = 1.0, f
        else:
            new = log_c - _lse(k + f[..., :, None], -2, xp)
            target, old = n / m, g
        if tol is not None and it > 0:
            err = as_float(xp.max(xp.abs(xp.exp(old - new) - 1.0))) * target
            if err <= tol:
                break
        if it % 2 == 0:
            f = new
        else:
            g = new
        it += 1
    plan = xp.exp(k + f[..., :, None] + g[..., None, :])
    if tol is None or err > tol:
        err = _marginal_error(plan, n, m, xp)
    return plan, f * eta, g * eta, it, err


def _marginal_error(plan, n, m, xp):
    rows = xp.max(xp.abs(xp.sum(plan, axis=-1) - 1.0))
    cols = xp.max(xp.abs(xp.sum(plan, axis=-2) - n / m))
    return as_float(xp.maximum(rows, cols))
