r"""Batched, complex-correct conjugate gradients for Hermitian positive-definite systems.

Spec: specs/diffusion_flow.md sections 2.2 and 2.7. Unlike the DDS reference ``CG`` (defects
2.7-1 and 2.7-2) the inner products are conjugated (:math:`\mathrm{Re}\langle r, r\rangle`
through ``xp.vecdot``, which conjugates its first argument), and every division is guarded:
a system whose residual reaches the tolerance, or whose curvature
:math:`p^H H p` is not positive, is frozen instead of producing NaN.
"""

from __future__ import annotations

from typing import NamedTuple

from .._backend import get_namespace
from .._validation import check_param
from ._base import LinearOperator, inner

__all__ = ["CGResult", "conjugate_gradient"]


class CGResult(NamedTuple):
    """Result of :func:`conjugate_gradient`.

    Attributes
    ----------
    x : array
        The solution, shaped like ``b``.
    n_iter : array of int
        Iterations taken by each system (shape of the batch axes).
    residual_norm : array
        :math:`\\|b - H x\\|` of each system, from the recursively updated residual.
    converged : array of bool
        Whether each system reached ``max(tol * ||b||, atol)``.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.operators import CGResult, conjugate_gradient
    >>> H = np.array([[4.0, 1.0], [1.0, 3.0]])
    >>> res = conjugate_gradient(lambda v: v @ H.T, np.array([1.0, 2.0]), tol=1e-12)
    >>> isinstance(res, CGResult), bool(res.converged), bool(np.allclose(H @ res.x, [1.0, 2.0]))
    (True, True, True)
    """

    x: object
    n_iter: object
    residual_norm: object
    converged: object


def conjugate_gradient(A, b, x0=None, *, max_iter=None, tol=1e-6, atol=0.0, fixed_iter=False, event_ndim=None):
    r"""Solve :math:`H x = b` for Hermitian positive-definite :math:`H` by conjugate gradients.

    With :math:`r_0 = b - H x_0`, :math:`p_0 = r_0`:

    .. math::

        \alpha_k = \frac{\mathrm{Re}\langle r_k, r_k\rangle}{\mathrm{Re}\langle p_k, H p_k\rangle},
        \quad x_{k+1} = x_k + \alpha_k p_k, \quad r_{k+1} = r_k - \alpha_k H p_k, \quad
        p_{k+1} = r_{k+1} + \frac{\langle r_{k+1}, r_{k+1}\rangle}{\langle r_k, r_k\rangle} p_k,

    with :math:`\langle a, b\rangle = \sum \bar a\, b`. In exact arithmetic :math:`x_k`
    minimises the :math:`H`-norm error over :math:`x_0 + \mathcal K_k(H, r_0)` and the method
    terminates in at most as many steps as :math:`H` has distinct eigenvalues. Started from
    :math:`x_0 = \hat x_0` on :math:`H = A^H A`, every update lies in
    :math:`\mathrm{range}(A^H)`, so the null-space component of :math:`\hat x_0` is kept
    exactly: the Krylov property behind DDS (Chung, Lee & Ye, ICLR 2024).

    Parameters
    ----------
    A : callable or LinearOperator
        :math:`x \mapsto H x`, batched over the leading axes (for instance ``op.normal`` or
        ``lambda x: x + gamma * op.normal(x)``). A :class:`LinearOperator` is applied with
        ``forward``.
    b : array
        Right-hand side, real or complex, shape ``(*batch, *event)``.
    x0 : array, optional
        Warm start, shaped like ``b`` (default zeros).
    max_iter : int, optional
        Iteration cap (default: the number of unknowns of one system).
    tol, atol : float
        Stop a system when :math:`\|r\| \le \max(\mathrm{tol}\,\|b\|, \mathrm{atol})`.
    fixed_iter : bool, default False
        Run exactly ``max_iter`` iterations without reading anything back to the host (the
        mode for samplers, e.g. DDS's M = 5); ``tol`` and ``atol`` then only decide
        ``converged``. Systems whose residual reaches machine precision, or that break down,
        are frozen, so running past convergence never produces NaN.
    event_ndim : int, optional
        Number of trailing axes forming one system; the leading axes index independent
        systems. Default: ``len(A.in_shape)`` for a LinearOperator, else ``b.ndim``.

    Returns
    -------
    CGResult

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.operators import conjugate_gradient
    >>> H = np.array([[4.0, 1.0], [1.0, 3.0]])
    >>> res = conjugate_gradient(lambda v: v @ H.T, np.array([1.0, 2.0]), tol=1e-12)
    >>> np.round(res.x, 6), int(res.n_iter)
    (array([0.090909, 0.636364]), 2)
    """
    xp, dev = get_namespace(b, x0, names=["b", "x0"])
    if isinstance(A, LinearOperator):
        if event_ndim is None:
            event_ndim = len(A.in_shape)
        A = A.forward
    if not callable(A):
        raise TypeError(f"A must be a callable or a LinearOperator, got {type(A).__name__}")
    if not xp.isdtype(b.dtype, ("real floating", "complex floating")):
        raise TypeError(f"b must have a floating dtype, got {b.dtype}")
    if b.ndim == 0:
        raise ValueError("b must have at least one dimension")
    if event_ndim is None:
        event_ndim = b.ndim
    check_param("event_ndim", event_ndim, "int", low=1, high=b.ndim)
    check_param("tol", tol, "real", low=0.0)
    check_param("atol", atol, "real", low=0.0)
    check_param("fixed_iter", fixed_iter, "bool")
    n_unknowns = 1
    for s in b.shape[b.ndim - event_ndim :]:
        n_unknowns *= s
    if max_iter is None:
        max_iter = n_unknowns
    check_param("max_iter", max_iter, "int", low=0)
    if not bool(xp.all(xp.isfinite(b))):
        raise ValueError("b must be finite")
    if x0 is None:
        x = xp.zeros_like(b)
        r = b
    else:
        if tuple(x0.shape) != tuple(b.shape):
            raise ValueError(f"x0 must have the shape of b {tuple(b.shape)}, got {tuple(x0.shape)}")
        x = x0 if x0.dtype == b.dtype else xp.astype(x0, b.dtype)
        r = b - A(x)
    expand = (slice(None),) * (b.ndim - event_ndim) + (None,) * event_ndim

    def dot(u, v):
        return xp.real(inner(u, v, xp, event_ndim))

    real_dtype = dot(b, b).dtype
    eps = xp.finfo(real_dtype).eps
    tiny = xp.finfo(real_dtype).smallest_normal
    bb = dot(b, b)
    target = xp.maximum(xp.asarray(tol**2, dtype=real_dtype, device=dev) * bb,
                        xp.asarray(atol**2, dtype=real_dtype, device=dev))
    floor = xp.maximum((eps**2) * bb, xp.asarray(tiny, dtype=real_dtype, device=dev))
    target = xp.maximum(target, floor)
    stop = floor if fixed_iter else target
    p = r
    rs = dot(r, r)
    broken = xp.zeros(rs.shape, dtype=xp.bool, device=dev)
    n_iter = xp.zeros(rs.shape, dtype=xp.int64, device=dev)
    for _ in range(int(max_iter)):
        active = (rs > stop) & ~broken
        if not fixed_iter and not bool(xp.any(active)):
            break
        Ap = A(p)
        pAp = dot(p, Ap)
        good = active & (pAp > tiny)
        broken = broken | (active & ~good)
        one = xp.ones_like(pAp)
        alpha = xp.where(good, rs / xp.where(good, pAp, one), xp.zeros_like(pAp))
        a = xp.astype(alpha, b.dtype)[expand] if xp.isdtype(b.dtype, "complex floating") else alpha[expand]
        x = x + a * p
        r = r - a * Ap
        rs_new = xp.where(good, dot(r, r), rs)
        beta = xp.where(good, rs_new / xp.where(good, rs, one), xp.zeros_like(rs))
        bt = xp.astype(beta, b.dtype)[expand] if xp.isdtype(b.dtype, "complex floating") else beta[expand]
        g = xp.astype(good, b.dtype)[expand] if xp.isdtype(b.dtype, "complex floating") else xp.astype(good, real_dtype)[expand]
        p = g * (r + bt * p) + (1 - g) * p
        rs = rs_new
        n_iter = n_iter + xp.astype(good, xp.int64)
    return CGResult(x, n_iter, xp.sqrt(rs), rs <= target)
