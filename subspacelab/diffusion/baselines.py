r"""Classical reconstruction baselines for linear inverse problems (any LinearOperator, any namespace).

* :func:`adjoint_reconstruction` -- zero-filled MRI / unfiltered back-projection, :math:`A^H y`;
* :func:`least_squares` -- CG on the normal equations (CG-SENSE for MRI, CGLS for CT), with
  the iteration count as the regulariser;
* :func:`tv_admm` -- anisotropic total variation by ADMM,
  :math:`\min_x \tfrac12\|Ax - y\|^2 + \lambda\|\nabla x\|_1`;
* :func:`dps_sample` -- diffusion posterior sampling (Chung et al. 2023): a gradient of the
  residual norm through the denoiser at every step (~1000 steps);
* :func:`ddnm_sample` -- DDNM (Wang et al. 2023) range-null projection, for operators with an
  exact pseudo-inverse :math:`A^+ = A^H` (single-coil Cartesian MRI, inpainting).

Real images with a complex operator (MRI of a real image) are handled as in
:func:`~subspacelab.diffusion.dds_data_consistency`: the real-linear adjoint
:math:`\mathrm{Re}\,A^H` is used.
"""

from __future__ import annotations

import math

from .._backend import check_random_state, get_namespace, random_normal
from .._validation import check_param
from ..operators import LinearOperator, conjugate_gradient
from .samplers import _check_measurements

__all__ = ["adjoint_reconstruction", "ddnm_sample", "dps_sample", "finite_differences", "finite_differences_adjoint",
           "least_squares", "tv_admm"]


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


def _rows_codec(operator, y, complex_images, xp):
    """Maps between images ``(B, *in_shape)`` and the denoiser's real rows ``(B, n)``
    (complex images as the flattened 2-channel layout of :func:`complex_to_channels`)."""
    from .samplers import channels_to_complex, complex_to_channels

    B, shape = y.shape[0], tuple(operator.in_shape)
    if complex_images:
        def to_img(rows):
            return channels_to_complex(xp.reshape(rows, (B, 2, *shape)))

        def to_rows(img):
            return xp.reshape(complex_to_channels(img), (B, -1))
    else:
        def to_img(rows):
            return xp.reshape(rows, (B, *shape))

        def to_rows(img):
            return xp.reshape(img, (B, -1))
    return to_img, to_rows


def dps_sample(denoiser, operator, y, *, n_steps=1000, step_size=1.0, complex_images=False, random_state=None):
    r"""Diffusion posterior sampling (DPS; Chung, Kim, Mccann, Klasky & Ye, ICLR 2023) for any linear operator.

    On the DDPM linear schedule respaced to ``n_steps`` times, each step is an ancestral step
    (DDIM :math:`\eta = 1`) followed by a gradient step through the denoiser (spec 2.9):

    .. math::

        x_{t-1} = x'_{t-1} - \zeta\,\nabla_{x_t}\,\|y - A\hat x_0(x_t)\|,\qquad
        \hat x_0(x_t) = D(x_t/a_t, s_t/a_t),

    with the unsquared residual norm as in the reference code (so :math:`\zeta` is
    :math:`\zeta'/\|r\|` times the gradient of the squared norm). The gradient is the
    vector-Jacobian product :math:`g^T\partial\hat x_0/\partial x_t`,
    :math:`g = -\mathrm{Re}\,A^H r/\|r\|`: in closed form for Gaussian and MoLRG priors
    (:math:`\partial\hat x_0/\partial x_t = (a_t/s_t^2)\,\mathrm{Cov}[x_0\mid x_t]`, symmetric)
    and by torch autograd for a :class:`~subspacelab.diffusion.TorchDenoiser` (the chain of
    :func:`~subspacelab.diffusion.copaint.dps_inpaint`).

    Parameters
    ----------
    denoiser : fitted GaussianDenoiser, MoLRGDenoiser or TorchDenoiser
        On rows: flattened images (complex images as the flattened 2-channel layout).
    operator : LinearOperator
    y : array of shape ``(n_samples, *operator.out_shape)``
    n_steps : int, default 1000
        Diffusion steps (the reference uses 1000).
    step_size : float >= 0, default 1.0
        :math:`\zeta`; 0 gives the unconditional ancestral sampler.
    complex_images : bool, default False
    random_state : int, Generator or None

    Returns
    -------
    x : array of shape ``(n_samples, *operator.in_shape)``
    info : dict
        ``nfe``: denoiser evaluations per image (forward and VJP each count one,
        :math:`2(N-1) + 1`); ``residual``: final :math:`\|y - Ax\|` per image (a list).

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.diffusion import GaussianDenoiser
    >>> from subspacelab.diffusion.baselines import dps_sample
    >>> from subspacelab.operators import Inpainting
    >>> rng = np.random.default_rng(0)
    >>> D = GaussianDenoiser().fit(rng.normal(size=(300, 2)) @ rng.normal(size=(2, 6)))
    >>> A = Inpainting(np.array([1.0, 1, 0, 1, 0, 1]))
    >>> x, info = dps_sample(D, A, A.forward(D.sample(2, random_state=1)), n_steps=100, random_state=0)
    >>> x.shape, info["nfe"]
    ((2, 6), 199)
    """
    from .copaint import _dps_loop, _prior

    xp, dev, rdt = _check_measurements(operator, y, complex_images)
    N = check_param("n_steps", n_steps, "int", low=1, high=1000)
    check_param("step_size", step_size, "real", low=0.0)
    rng = check_random_state(random_state)
    prior = _prior(denoiser, xp, dev, rdt)
    to_img, to_rows = _rows_codec(operator, y, complex_images, xp)
    real = operator.complex_input and not complex_images
    nd = len(operator.out_shape)
    axes = tuple(range(1, nd + 1))

    def residual(x_img):
        r = y - operator.forward(x_img)
        return r, xp.sqrt(xp.sum(xp.real(r * xp.conj(r)) if xp.isdtype(r.dtype, "complex floating") else r * r,
                                  axis=axes))

    def grad_norm(x0_rows):  # d ||y - A x0|| / d x0 on the rows
        r, norm = residual(to_img(x0_rows))
        g = operator.adjoint(r)
        if real:
            g = xp.real(g)
        safe = xp.where(norm > 0, norm, xp.ones_like(norm))
        g = -g / xp.reshape(xp.astype(safe, g.dtype) if xp.isdtype(g.dtype, "complex floating") else safe,
                            (-1,) + (1,) * len(operator.in_shape))
        return xp.astype(to_rows(g), rdt)

    n_rows = math.prod(operator.in_shape) * (2 if complex_images else 1)
    n_in = getattr(denoiser, "n_features_in_", n_rows)
    if n_in != n_rows:
        raise ValueError(f"the denoiser expects {n_in} values per image, the operator's images have {n_rows}"
                         + (" (complex images: 2 real channels)" if complex_images else ""))
    x = random_normal(rng, (y.shape[0], n_rows), xp, device=dev, dtype=rdt)
    x0, nfe = _dps_loop(prior, x, grad_norm, N, step_size, rng)
    out = to_img(x0)
    return out, {"nfe": nfe, "residual": [float(v) for v in residual(out)[1]]}


def _check_partial_isometry(operator, xp, dev, dt, complex_images, random_state):
    """Raise unless :math:`A^HA` is an orthogonal projection (then :math:`A^+ = A^H`), tested on a random probe."""
    rng = check_random_state(random_state)
    shape = (1, *operator.in_shape)
    v = random_normal(rng, shape, xp, device=dev, dtype=dt)
    if complex_images:
        v = xp.astype(v, xp.complex64 if dt == xp.float32 else xp.complex128)
    p = operator.normal(v)
    if operator.complex_input and not complex_images:
        p = xp.real(p)
    pp = operator.normal(p)
    if operator.complex_input and not complex_images:
        pp = xp.real(pp)
    err = float(xp.sqrt(xp.sum(xp.abs(pp - p) ** 2)))
    ref = float(xp.sqrt(xp.sum(xp.abs(p) ** 2)))
    tol = 1e-4 if dt == xp.float32 else 1e-8
    if err > tol * max(ref, 1.0):
        raise ValueError(f"{type(operator).__name__} has no exact pseudo-inverse A^+ = A^H (A^H A is not a projection: "
                         f"relative error {err / max(ref, 1e-300):.2g}); DDNM needs e.g. single-coil Cartesian MRI or "
                         "inpainting -- use dds_sample (CG data consistency) instead")


def ddnm_sample(denoiser, operator, y, *, n_steps=50, eta=0.85, complex_images=False, random_state=None):
    r"""DDNM range-null sampling (Wang, Yu & Zhang, ICLR 2023) where :math:`A^+ = A^H` exactly.

    At each of the ``n_steps`` times of :func:`~subspacelab.diffusion.sampling_scales` (VP):
    :math:`\hat x_0 = D(x_t/a, s/a)`, the range-null projection

    .. math::

        \hat x_0' = A^+y + (I - A^+A)\hat x_0 = \hat x_0 + A^H(y - A\hat x_0),

    then the standard DDIM-:math:`\eta` step (:func:`~subspacelab.diffusion.ddim_step`; DDNM's
    default :math:`\eta = 0.85`). :math:`A^+ = A^H` holds exactly when :math:`A^HA` is an
    orthogonal projection (a partial isometry): a binary mask composed with a unitary transform
    (single-coil Cartesian MRI :math:`A = PF` of complex images, inpainting). Real images
    under a complex operator are not covered: the real-linear Gram :math:`\mathrm{Re}(A^HA)`
    of a Cartesian mask is not a projection unless the mask is conjugate-symmetric. That is checked on a random probe
    and other operators (multi-coil MRI, CT) are refused: for them use
    :func:`~subspacelab.diffusion.dds_sample`, whose CG on :math:`A^HA` started at
    :math:`\hat x_0` reaches the same projection (one CG step for a partial isometry, spec 2.2).
    Noiseless data only (no DDNM+ noise scaling).

    Parameters
    ----------
    denoiser : object with ``denoise(rows, sigma)``
    operator : LinearOperator with :math:`A^HA` a projection
    y : array of shape ``(n_samples, *operator.out_shape)``
    n_steps : int, default 50
    eta : float in [0, 1], default 0.85
        DDIM :math:`\eta`.
    complex_images : bool, default False
    random_state : int, Generator or None

    Returns
    -------
    array of shape ``(n_samples, *operator.in_shape)``

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.diffusion import GaussianDenoiser
    >>> from subspacelab.diffusion.baselines import ddnm_sample
    >>> from subspacelab.operators import MultiCoilMRI, sampling_mask
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 4)) @ rng.normal(size=(4, 128))  # complex 8 x 8 images as 2 channels
    >>> D = GaussianDenoiser(n_components=4).fit(X)
    >>> A = MultiCoilMRI(sampling_mask((8, 8), acceleration=2, center_fraction=0.25, random_state=0).mask)
    >>> images = X[:2, :64].reshape(2, 8, 8) + 1j * X[:2, 64:].reshape(2, 8, 8)
    >>> x = ddnm_sample(D, A, A.forward(images), n_steps=20, complex_images=True, random_state=0)
    >>> bool(np.allclose(A.forward(x), A.forward(images)))
    True
    """
    from .denoisers import tweedie
    from .samplers import _flat_denoiser, _normal_like, ddim_step, sampling_scales

    xp, dev, rdt = _check_measurements(operator, y, complex_images)
    N = check_param("n_steps", n_steps, "int", low=1)
    check_param("eta", eta, "real", low=0.0, high=1.0)
    rng = check_random_state(random_state)
    _check_partial_isometry(operator, xp, dev, rdt, complex_images, 0)  # own probe: leaves the sampler seed alone
    real = operator.complex_input and not complex_images
    dt = (xp.complex64 if rdt == xp.float32 else xp.complex128) if complex_images else rdt

    def project(x0):
        g = operator.adjoint(y - operator.forward(x0))
        return x0 + xp.astype(xp.real(g) if real else g, dt)

    a, s = sampling_scales(N, "vp")
    D = _flat_denoiser(denoiser, xp)
    x = _normal_like(rng, xp.zeros((y.shape[0], *operator.in_shape), dtype=dt, device=dev), xp, dev)
    for i in range(N):
        x0, eps = tweedie(D, x, float(a[i]), float(s[i]))
        x0 = project(x0)
        if s[i + 1] == 0:
            break
        z = _normal_like(rng, x0, xp, dev) if eta > 0 else None
        x = ddim_step(x0, eps, float(a[i + 1]), float(s[i + 1]), scale=float(a[i]), noise=float(s[i]), eta=eta, z=z)
    return x0
