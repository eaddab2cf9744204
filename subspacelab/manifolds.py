r"""Riemannian tools for the Grassmann manifold: tangent projection, geodesics, retraction,
principal angles.

A point of the Grassmannian :math:`\mathrm{Gr}(k, d)` (a :math:`k`-dimensional subspace of
:math:`\mathbb{R}^d`) is represented by an orthonormal basis :math:`S \in \mathbb{R}^{d \times k}`,
:math:`S^\top S = I_k`; two bases represent the same point when :math:`S' = S Q` for an
orthogonal :math:`Q`. Tangent vectors at :math:`S` are represented in the *horizontal space*
:math:`\{V : S^\top V = 0\}` [1]_.

Every function is plain array-API code: it works in the namespace and on the device of its
inputs (NumPy, PyTorch, CuPy, array_api_strict, ...), keeps float32 in float32, and accepts
stacks of bases with leading batch dimensions, ``(..., d, k)``.

References
----------
.. [1] A. Edelman, T. A. Arias, S. T. Smith, "The Geometry of Algorithms with Orthogonality
   Constraints", SIAM J. Matrix Anal. Appl. 20(2), 1998.
.. [2] P.-A. Absil, R. Mahony, R. Sepulchre, "Optimization Algorithms on Matrix Manifolds",
   Princeton University Press, 2008.
.. [3] A. V. Knyazev, M. E. Argentati, "Principal Angles between Subspaces in an A-Based Scalar
   Product: Algorithms and Perturbation Estimates", SIAM J. Sci. Comput. 23(6), 2002.
"""

from __future__ import annotations

from ._backend import get_namespace
from ._validation import check_array

__all__ = [
    "grassmann_distance",
    "grassmann_exp",
    "grassmann_project",
    "principal_angles",
    "qr_retraction",
]


# --------------------------------------------------------------------------------------------
# validation


def _check_pair(S, V, names):
    """Check a basis stack S (..., d, k) and a second array V of the same shape."""
    xp, dev = get_namespace(S, V, names=names)
    check_array(S, names[0], min_ndim=2)
    check_array(V, names[1], min_ndim=2)
    if tuple(S.shape) != tuple(V.shape):
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape (..., d, k), got "
            f"{tuple(S.shape)} and {tuple(V.shape)}"
        )
    _check_tall(S, names[0])
    return xp, dev


def _check_tall(S, name):
    d, k = S.shape[-2], S.shape[-1]
    if k > d:
        raise ValueError(
            f"{name} must have shape (..., d, k) with k <= d (k orthonormal columns in R^d), "
            f"got shape {tuple(S.shape)}"
        )


def _common_dtype(xp, *arrays):
    dtype = xp.result_type(*(a.dtype for a in arrays))
    return [a if a.dtype == dtype else xp.astype(a, dtype) for a in arrays]


# --------------------------------------------------------------------------------------------
# unchecked building blocks (used in the estimators' inner loops)


def _project(S, D, xp):
    return D - S @ (xp.matrix_transpose(S) @ D)


def _exp(S, V, xp):
    U, sigma, Wt = xp.linalg.svd(V, full_matrices=False)
    cos = xp.expand_dims(xp.cos(sigma), axis=-2)
    sin = xp.expand_dims(xp.sin(sigma), axis=-2)
    return ((S @ xp.matrix_transpose(Wt)) * cos + U * sin) @ Wt


def _qr(A, xp):
    Q, R = xp.linalg.qr(A)
    signs = xp.sign(xp.linalg.diagonal(R))
    signs = xp.where(signs == 0, xp.ones_like(signs), signs)
    return Q * xp.expand_dims(signs, axis=-2)


# --------------------------------------------------------------------------------------------
# public functions


def grassmann_project(S, D):
    r"""Project ``D`` onto the horizontal (tangent) space of the Grassmannian at ``S``.

    .. math:: \operatorname{P}_S(D) = D - S (S^\top D) = (I - S S^\top) D.

    Applied to the Euclidean gradient of a function of ``span(S)``, this gives its Riemannian
    gradient [1]_. The result satisfies :math:`S^\top \operatorname{P}_S(D) = 0`.

    Parameters
    ----------
    S : array of shape (..., d, k)
        Orthonormal bases (:math:`S^\top S = I_k`), optionally stacked; ``k <= d``.
    D : array of shape (..., d, k)
        Matrices to project, e.g. Euclidean gradients.

    Returns
    -------
    array of shape (..., d, k)
        The horizontal component of ``D``, in the namespace and on the device of the inputs.

    References
    ----------
    .. [1] A. Edelman, T. A. Arias, S. T. Smith, "The Geometry of Algorithms with Orthogonality
       Constraints", SIAM J. Matrix Anal. Appl. 20(2), 1998.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.manifolds import grassmann_project
    >>> S = np.eye(3)[:, :1]
    >>> grassmann_project(S, np.array([[1.0], [2.0], [3.0]])).ravel().tolist()
    [0.0, 2.0, 3.0]
    """
    xp, _ = _check_pair(S, D, ["S", "D"])
    S, D = _common_dtype(xp, S, D)
    return _project(S, D, xp)


def grassmann_exp(S, V):
    r"""Exponential map of the Grassmannian: follow the geodesic from ``S`` along ``V`` for unit time.

    With the thin SVD :math:`V = U \Sigma W^\top` of the horizontal tangent vector ``V``,

    .. math:: \exp_S(V) = S W \cos(\Sigma) W^\top + U \sin(\Sigma) W^\top,

    the exact geodesic of Edelman, Arias and Smith [1]_; a gradient step of size :math:`\eta` is
    :math:`\exp_S(-\eta\, G)` with :math:`G` the Riemannian gradient. The result is again an
    orthonormal basis, the principal angles between ``span(S)`` and the result are the
    singular values of ``V`` (while they are below :math:`\pi/2`), and for small ``V`` it
    agrees with :func:`qr_retraction` to second order.

    Parameters
    ----------
    S : array of shape (..., d, k)
        Orthonormal bases, optionally stacked; ``k <= d``.
    V : array of shape (..., d, k)
        Tangent vectors at ``S``. ``V`` is first projected onto the horizontal space
        (:func:`grassmann_project`), which changes nothing for a tangent ``V`` and keeps the
        result orthonormal for any other.

    Returns
    -------
    array of shape (..., d, k)
        Orthonormal bases of the end points.

    References
    ----------
    .. [1] A. Edelman, T. A. Arias, S. T. Smith, "The Geometry of Algorithms with Orthogonality
       Constraints", SIAM J. Matrix Anal. Appl. 20(2), 1998.

    Examples
    --------
    Rotate the x-axis of the plane by 0.3 radians:

    >>> import numpy as np
    >>> from subspacelab.manifolds import grassmann_exp
    >>> S = np.array([[1.0], [0.0]])
    >>> np.round(grassmann_exp(S, np.array([[0.0], [0.3]])).ravel(), 6).tolist()
    [0.955336, 0.29552]
    """
    xp, _ = _check_pair(S, V, ["S", "V"])
    S, V = _common_dtype(xp, S, V)
    return _exp(S, _project(S, V, xp), xp)


def qr_retraction(S, V=None):
    r"""QR retraction :math:`R_S(V) = \operatorname{qf}(S + V)`, or the orthonormalisation of ``S``.

    :math:`\operatorname{qf}` is the Q factor of the thin QR decomposition with the signs fixed
    so that :math:`R` has a nonnegative diagonal, which makes it unique [2]_. It is a
    first-order approximation of :func:`grassmann_exp` (cheaper: no SVD, no trigonometry) and,
    with ``V=None``, the re-orthonormalisation that removes floating-point drift from a basis
    without changing its span.

    Parameters
    ----------
    S : array of shape (..., d, k)
        Bases (orthonormal when ``V`` is given), optionally stacked; ``k <= d``.
    V : array of shape (..., d, k), optional
        Tangent vectors at ``S``.

    Returns
    -------
    array of shape (..., d, k)
        Orthonormal bases.

    References
    ----------
    .. [2] P.-A. Absil, R. Mahony, R. Sepulchre, "Optimization Algorithms on Matrix Manifolds",
       Princeton University Press, 2008.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.manifolds import qr_retraction
    >>> Q = qr_retraction(np.array([[2.0, 1.0], [0.0, 1.0], [0.0, 0.0]]))
    >>> bool(np.allclose(Q.T @ Q, np.eye(2))), np.abs(Q[:, 1]).round(6).tolist()
    (True, [0.0, 1.0, 0.0])
    """
    if V is None:
        xp, _ = get_namespace(S, names=["S"])
        check_array(S, "S", min_ndim=2)
        _check_tall(S, "S")
        return _qr(S, xp)
    xp, _ = _check_pair(S, V, ["S", "V"])
    S, V = _common_dtype(xp, S, V)
    return _qr(S + V, xp)


def principal_angles(A, B):
    r"""Principal angles between ``span(A)`` and ``span(B)``, in increasing order.

    With orthonormal bases :math:`Q_A`, :math:`Q_B` of the two spans (thin QR; the columns of
    ``A`` and ``B`` need not be orthonormal, only linearly independent), the cosines of the
    angles are the singular values of :math:`Q_A^\top Q_B` and the sines those of
    :math:`Q_B - Q_A Q_A^\top Q_B` (for ``k_B <= k_A``). Angles below :math:`\pi/4` are taken
    from the sines and the others from the cosines, which keeps small angles accurate to
    machine precision where :math:`\arccos` alone loses half of the digits [3]_.

    Parameters
    ----------
    A : array of shape (..., d, k_A)
    B : array of shape (..., d, k_B)
        Bases of the two subspaces (same ``d`` and batch dimensions), full column rank.

    Returns
    -------
    array of shape (..., min(k_A, k_B))
        Angles in :math:`[0, \pi/2]`, smallest first.

    See Also
    --------
    scipy.linalg.subspace_angles : the same angles (largest first) for NumPy inputs.

    References
    ----------
    .. [3] A. V. Knyazev, M. E. Argentati, "Principal Angles between Subspaces in an A-Based Scalar
       Product: Algorithms and Perturbation Estimates", SIAM J. Sci. Comput. 23(6), 2002.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.manifolds import principal_angles
    >>> A = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    >>> B = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    >>> np.round(principal_angles(A, B), 6).tolist()
    [0.0, 0.785398]
    """
    xp, _ = get_namespace(A, B, names=["A", "B"])
    check_array(A, "A", min_ndim=2)
    check_array(B, "B", min_ndim=2)
    _check_tall(A, "A")
    _check_tall(B, "B")
    if A.shape[-2] != B.shape[-2] or tuple(A.shape[:-2]) != tuple(B.shape[:-2]):
        raise ValueError(
            "A and B must have shapes (..., d, k_A) and (..., d, k_B) with the same d and "
            f"batch dimensions, got {tuple(A.shape)} and {tuple(B.shape)}"
        )
    A, B = _common_dtype(xp, A, B)
    QA, QB = _qr(A, xp), _qr(B, xp)
    if QB.shape[-1] > QA.shape[-1]:
        QA, QB = QB, QA
    M = xp.matrix_transpose(QA) @ QB
    cos = xp.clip(xp.linalg.svdvals(M), 0.0, 1.0)  # largest cosine first: smallest angle first
    sin = xp.flip(xp.linalg.svdvals(QB - QA @ M), axis=-1)  # smallest sine first
    sin = xp.clip(sin, 0.0, 1.0)
    from_sin = xp.asin(sin)
    from_cos = xp.acos(cos)
    return xp.where(sin * sin < 0.5, from_sin, from_cos)


def grassmann_distance(A, B):
    r"""Geodesic distance on the Grassmannian, :math:`\lVert \theta \rVert_2`, from the principal
    angles :math:`\theta` between ``span(A)`` and ``span(B)`` (:func:`principal_angles`).

    Parameters
    ----------
    A : array of shape (..., d, k_A)
    B : array of shape (..., d, k_B)
        Bases of the two subspaces, full column rank.

    Returns
    -------
    array of shape (...)
        Distances in :math:`[0, \sqrt{\min(k_A, k_B)}\,\pi/2]`.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.manifolds import grassmann_distance
    >>> round(float(grassmann_distance(np.array([[1.0], [0.0]]), np.array([[1.0], [1.0]]))), 12)
    0.785398163397
    """
    theta = principal_angles(A, B)
    xp, _ = get_namespace(theta)
    return xp.sqrt(xp.sum(theta * theta, axis=-1))
