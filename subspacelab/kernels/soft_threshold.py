"""Soft thresholding: the proximal map of the l1 norm, and its non-negative variant."""

from __future__ import annotations

import numbers

from .._backend import get_namespace
from .._validation import check_array, check_param
from ._dispatch import from_cuda, from_host, select_backend, to_cuda, to_host

__all__ = ["soft_threshold"]


def soft_threshold(x, lam, *, nonnegative=False, backend="auto"):
    r"""Elementwise soft thresholding.

    .. math::

        S_\lambda(x) = \operatorname{sign}(x)\,\max(|x| - \lambda, 0), \qquad
        S^+_\lambda(x) = \max(x - \lambda, 0)\ \text{(nonnegative=True)}.

    :math:`S_\lambda` is the proximal map of :math:`\lambda\|\cdot\|_1`; :math:`S^+_\lambda` is
    the proximal map of :math:`\lambda\|\cdot\|_1` plus the indicator of :math:`x \ge 0`, the
    non-linearity of CRATE's ISTA block (``ReLU(x - eta * lam)``).

    Parameters
    ----------
    x : array
        Real floating array of any shape and any array-API library.
    lam : float or array
        Threshold, non-negative; an array must broadcast against ``x`` and share its namespace.
    nonnegative : bool, default False
        Use the non-negative variant.
    backend : {"auto", "generic", "numba", "cuda"}
        Implementation (see :mod:`subspacelab.kernels`). Arrays ``lam`` go to the generic path.

    Returns
    -------
    array
        Same shape, dtype, namespace and device as ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.kernels import soft_threshold
    >>> soft_threshold(np.array([-2.0, -0.5, 0.5, 3.0]), 1.0)
    array([-1., -0.,  0.,  2.])
    >>> soft_threshold(np.array([0.5, -0.2, 0.05]), 0.01, nonnegative=True)
    array([0.49, 0.  , 0.04])
    """
    xp, dev = check_array(x, "x", min_ndim=0, allow_empty=True)
    check_param("nonnegative", nonnegative, "bool")
    if isinstance(lam, numbers.Number):
        check_param("lam", lam, "real", low=0.0)
        lam = float(lam)
    else:
        get_namespace(x, lam, names=["x", "lam"])
        if not bool(xp.all(lam >= 0)) or not bool(xp.all(xp.isfinite(lam))):
            raise ValueError("lam must be finite and non-negative")
        if backend not in ("auto", "generic"):
            raise ValueError("an array lam is supported by the generic implementation only")
        return _generic(x, lam, nonnegative, xp)
    impl = select_backend(x, backend)
    if impl == "generic":
        return _generic(x, lam, nonnegative, xp)
    if impl == "numba":
        from ._soft_threshold_numba import soft_threshold_numba

        (xh,) = to_host(x)
        return from_host(soft_threshold_numba(xh, lam, nonnegative), xp, dev)
    from ._soft_threshold_cuda import soft_threshold_cuda

    (xd,) = to_cuda(x)
    return from_cuda(soft_threshold_cuda(xd, lam, nonnegative), x, xp, dev)


def _generic(x, lam, nonnegative, xp):
    """Array-API reference implementation (keeps torch autograd)."""
    if nonnegative:
        return xp.maximum(x - lam, xp.zeros_like(x))
    return xp.sign(x) * xp.maximum(xp.abs(x) - lam, xp.zeros_like(x))
