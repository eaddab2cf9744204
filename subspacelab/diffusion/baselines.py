r"""Classical reconstruction baselines for linear inverse problems (any LinearOperator, any namespace).

* :func:`adjoint_reconstruction` -- zero-filled MRI / unfiltered back-projection, :math:`A^H y`;
* :func:`least_squares` -- CG on the normal equations (CG-SENSE for MRI, CGLS for CT), with
  the iteration count as the regulariser;
* :func:`tv_admm` -- anisotropic total variation by ADMM,
  :math:`\min_x \tfrac12\|Ax - y\|^2 + \lambda\|\nabla x\|_1`.

Real images with a complex operator (MRI of a real image) are handled as in
:func:`~subspacelab.diffusion.dds_data_consistency`: the real-linear adjoint
:math:`\mathrm{Re}\,A^H` is used.
"""

from __future__ import annotations

from .._backend import get_namespace
from .._validation import check_param
from ..operators import LinearOperator, conjugate_gradient

__all__ = ["adjoint_reconstruction", "finite_differences", "finite_differences_adjoint", "least_squares", "tv_admm"]


def _setup(operator, y, complex_images):
    if not isinstance(operator, LinearOperator):
        raise TypeError(f"operator must be a LinearOperator, got {type(operator).__name__}")
    check_param("complex_images", complex_images, "bool")
    xp, _ = get_namespace(y, names=["y"])
    out_shape = tuple(operator.out_shape)
    if y.ndim < len(out_shape) or tuple(y.shape[y.ndim - len(out_shape):]) != out_shape:
        raise ValueError(f"y must have trailing shape {out_shape} to match the operator, got {tuple(y.shape)}")
    if complex_images and not operator.complex_input:
        raise TypeError(f"{type(operator).__name__} is a real operator; complex_images must be False")
    real = operator.complex_input and not complex_images
    Aty = operator.adjoint(y)
    if real:
        Aty = xp.real(Aty)

    def gram(v):
        g = operator.normal(v)
        return xp.real(g) if real else g

    return xp, Aty, gram


def adjoint_reconstruction(operator, y, *, complex_images=False):
    r"""Zero-filled / back-projected image :math:`A^H y` (:math:`\mathrm{Re}\,A^Hy` for real images).

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.diffusion.baselines import adjoint_reconstruction
    >>> from subspacelab.operators import MultiCoilMRI
    >>> A = MultiCoilMRI(np.ones((4, 4)))
    >>> x = np.arange(16.0).reshape(4, 4)
    >>> bool(np.allclose(adjoint_reconstruction(A, A.forward(x)), x))
    True
    """
    return _setup(operator, y, complex_images)[1]


def least_squares(operator, y, *, n_iter=10, complex_images=False):
    r"""``n_iter`` CG steps on :math:`A^HA x = A^Hy` from zero (CG-SENSE / CGLS; early stopping regularises).

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.diffusion.baselines import least_squares
    >>> from subspacelab.operators import ParallelBeamCT, sparse_view_angles
    >>> x = np.zeros((1, 16, 16))
    >>> x[0, 5:11, 5:11] = 1.0
    >>> A = ParallelBeamCT((16, 16), sparse_view_angles(30))
    >>> x_ls = least_squares(A, A.forward(x), n_iter=20)
    >>> x_ls.shape, bool(np.linalg.norm(x_ls - x) < 0.5 * np.linalg.norm(x))
    ((1, 16, 16), True)
    """
    check_param("n_iter", n_iter, "int", low=1)
    xp, Aty, gram = _setup(operator, y, complex_images)
    return conjugate_gradient(gram, Aty, max_iter=n_iter, fixed_iter=True, event_ndim=len(operator.in_shape)).x


def finite_differences(x, xp):
    """Circular forward differences along the last two axes, stacked on a new axis -3: (..., 2, H, W).

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.diffusion.baselines import finite_differences
    >>> g = finite_differences(np.arange(9.0).reshape(3, 3), np)
    >>> g.shape
    (2, 3, 3)
    >>> g[0]  # vertical differences, wrapping around
    array([[ 3.,  3.,  3.],
           [ 3.,  3.,  3.],
           [-6., -6., -6.]])
    """
    return xp.stack([xp.roll(x, -1, axis=-2) - x, xp.roll(x, -1, axis=-1) - x], axis=-3)


def finite_differences_adjoint(g, xp):
    """Adjoint of :func:`finite_differences`.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.diffusion.baselines import finite_differences, finite_differences_adjoint
    >>> rng = np.random.default_rng(0)
    >>> x, g = rng.normal(size=(4, 4)), rng.normal(size=(2, 4, 4))
    >>> lhs = np.sum(finite_differences(x, np) * g)
    >>> bool(np.isclose(lhs, np.sum(x * finite_differences_adjoint(g, np))))
    True
    """
    return (xp.roll(g[..., 0, :, :], 1, axis=-2) - g[..., 0, :, :]) + (xp.roll(g[..., 1, :, :], 1, axis=-1) - g[..., 1, :, :])


def _shrink(v, t, xp):
    if xp.isdtype(v.dtype, "complex floating"):
        mag = xp.abs(v)
        scale = xp.maximum(mag - t, xp.zeros_like(mag)) / xp.where(mag > 0, mag, xp.ones_like(mag))
        return xp.astype(scale, v.dtype) * v
    return xp.sign(v) * xp.maximum(xp.abs(v) - t, xp.zeros_like(v))


def tv_admm(operator, y, *, lam=0.01, rho=None, n_iter=50, cg_iter=5, x0=None, complex_images=False):
    r"""Anisotropic TV reconstruction by ADMM (2-D images, circular differences :math:`\nabla`).

    .. math::

        \min_x \tfrac12\|Ax - y\|^2 + \lambda\|\nabla x\|_1;\quad
        x \leftarrow \mathrm{CG}\big(A^HA + \rho\nabla^T\nabla,\ A^Hy + \rho\nabla^T(d - u)\big),\
        d \leftarrow \mathcal S_{\lambda/\rho}(\nabla x + u),\ u \leftarrow u + \nabla x - d,

    with the x-update warm-started (``cg_iter`` CG steps) and :math:`\mathcal S` the soft
    threshold (magnitude shrinkage for complex images).

    Parameters
    ----------
    operator : LinearOperator with a 2-D ``in_shape``
    y : array of shape ``(*batch, *operator.out_shape)``
    lam : float > 0
        TV weight :math:`\lambda`.
    rho : float > 0, optional
        ADMM penalty (default ``10 * lam``).
    n_iter : int
        ADMM iterations.
    cg_iter : int
        CG steps per x-update.
    x0 : array, optional
        Start (default: the adjoint reconstruction).
    complex_images : bool

    Returns
    -------
    array of shape ``(*batch, *operator.in_shape)``

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.diffusion.baselines import tv_admm
    >>> from subspacelab.operators import ParallelBeamCT, sparse_view_angles
    >>> x = np.zeros((1, 16, 16))
    >>> x[0, 5:11, 5:11] = 1.0
    >>> A = ParallelBeamCT((16, 16), sparse_view_angles(8))
    >>> x_tv = tv_admm(A, A.forward(x), lam=1e-3, n_iter=30)
    >>> x_tv.shape, bool(np.linalg.norm(x_tv - x) < 0.5 * np.linalg.norm(x))
    ((1, 16, 16), True)
    """
    check_param("lam", lam, "real", low=0.0, closed="neither")
    rho = 10.0 * lam if rho is None else rho
    check_param("rho", rho, "real", low=0.0, closed="neither")
    check_param("n_iter", n_iter, "int", low=1)
    check_param("cg_iter", cg_iter, "int", low=1)
    if len(operator.in_shape) != 2:
        raise ValueError(f"tv_admm needs 2-D images, the operator takes shape {tuple(operator.in_shape)}")
    xp, Aty, gram = _setup(operator, y, complex_images)
    x = Aty if x0 is None else x0
    d = finite_differences(x, xp)
    u = xp.zeros_like(d)

    def H(v):
        return gram(v) + rho * finite_differences_adjoint(finite_differences(v, xp), xp)

    for _ in range(int(n_iter)):
        b = Aty + rho * finite_differences_adjoint(d - u, xp)
        x = conjugate_gradient(H, b, x0=x, max_iter=cg_iter, fixed_iter=True, event_ndim=2).x
        g = finite_differences(x, xp)
        d = _shrink(g + u, lam / rho, xp)
        u = u + g - d
    return x
