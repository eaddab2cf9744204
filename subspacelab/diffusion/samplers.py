r"""Diffusion samplers on the one denoiser interface: generalised DDIM steps and DDS.

Spec: specs/diffusion_flow.md sections 1.2, 1.3, 2.1-2.3 and 2.7. A diffusion state is
:math:`x_t = a\,x_0 + s\,\varepsilon` with signal scale :math:`a` and noise scale :math:`s`;
VP (DDPM) has :math:`a = \sqrt{\bar\alpha_t}`, :math:`s = \sqrt{1-\bar\alpha_t}`, VE has
:math:`a = 1`, :math:`s = \sigma_t`. The denoiser is always :math:`D(z, \sigma) = E[x_0\mid
z = x_0 + \sigma n]`, called through :func:`~subspacelab.diffusion.tweedie`, so one code path
serves both schedules.

Two re-noising rules, deliberately named apart (section 1.3):

* :func:`ddim_step` -- standard DDIM (Song et al. 2021) with :math:`\eta_\mathrm{DDIM}`;
  a consistent discretisation for every :math:`\eta_\mathrm{DDIM}`;
* :func:`dds_renoise` -- the rule of the DDS code,
  :math:`x_{t'} = a'\hat x_0 + s'(\eta z + \sqrt{1-\eta^2}\,\hat\varepsilon)`; it equals DDIM at
  :math:`\eta = 0` and is **under-dispersed** for :math:`\eta > 0` (its output variance does not
  reach the target as the number of steps grows), so it is a regularised sampler, not a
  posterior sampler.

:func:`dds_sample` is Decomposed Diffusion Sampling (Chung, Lee & Ye, ICLR 2024): after each
Tweedie estimate a few conjugate-gradient steps *started at* :math:`\hat x_0` enforce data
consistency, with no gradient through the denoiser. Unlike the reference code (section 2.7),
the CG inner products are conjugated, its divisions guarded, the complex right-hand side is
never mixed with a real channel tensor, and the adjoint is the exact adjoint of the operator.
"""

from __future__ import annotations

import math

import numpy as np

from .._backend import check_random_state, get_namespace, random_normal
from .._validation import check_param
from ..operators import LinearOperator, conjugate_gradient
from .denoisers import tweedie

__all__ = [
    "channels_to_complex",
    "complex_to_channels",
    "dds_data_consistency",
    "dds_renoise",
    "dds_sample",
    "ddim_step",
    "diff_z",
    "diff_z_adjoint",
    "sampling_scales",
    "vp_alpha_bar",
]


def complex_to_channels(x):
    """Complex images ``(B, *shape)`` -> real ``(B, 2, *shape)`` (real part, imaginary part).

    The one conversion from complex images to the real input of a denoiser; inverse:
    :func:`channels_to_complex`.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.diffusion import channels_to_complex, complex_to_channels
    >>> z = np.array([[1 + 2j, 3 - 1j]])
    >>> complex_to_channels(z)
    array([[[ 1.,  3.],
            [ 2., -1.]]])
    >>> bool(np.all(channels_to_complex(complex_to_channels(z)) == z))
    True
    """
    xp, _ = get_namespace(x, names=["x"])
    if not xp.isdtype(x.dtype, "complex floating"):
        raise TypeError(f"x must be complex, got {x.dtype}")
    if x.ndim < 1:
        raise ValueError("x must have a batch axis")
    return xp.stack([xp.real(x), xp.imag(x)], axis=1)


def channels_to_complex(x):
    """Real ``(B, 2, *shape)`` -> complex ``(B, *shape)``; inverse of :func:`complex_to_channels`.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.diffusion import channels_to_complex, complex_to_channels
    >>> z = np.array([[1 + 2j, 3 - 1j]])
    >>> x = complex_to_channels(z)
    >>> x.shape
    (1, 2, 2)
    >>> channels_to_complex(x)
    array([[1.+2.j, 3.-1.j]])
    """
    xp, _ = get_namespace(x, names=["x"])
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(f"x must be real floating, got {x.dtype}")
    if x.ndim < 2 or x.shape[1] != 2:
        raise ValueError(f"x must have shape (B, 2, ...), got {tuple(x.shape)}")
    cdt = xp.complex64 if x.dtype == xp.float32 else xp.complex128
    j = xp.asarray(1j, dtype=cdt)
    return xp.astype(x[:, 0, ...], cdt) + j * xp.astype(x[:, 1, ...], cdt)


def vp_alpha_bar(n_train=1000, beta_start=1e-4, beta_end=0.02):
    r"""DDPM linear schedule: :math:`\beta` linear from ``beta_start`` to ``beta_end`` over
    ``n_train`` steps and :math:`\bar\alpha_t = \prod_{s\le t}(1-\beta_s)` (NumPy float64).

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.diffusion import vp_alpha_bar
    >>> ab = vp_alpha_bar()
    >>> ab.shape, bool(np.all(np.diff(ab) < 0)), round(float(ab[0]), 4)
    ((1000,), True, 0.9999)
    """
    check_param("n_train", n_train, "int", low=1)
    check_param("beta_start", beta_start, "real", low=0.0, high=1.0, closed="neither")
    check_param("beta_end", beta_end, "real", low=0.0, high=1.0, closed="neither")
    return np.cumprod(1.0 - np.linspace(beta_start, beta_end, int(n_train)))


def sampling_scales(n_steps, schedule="vp", *, sigma_max=80.0, sigma_min=0.01, n_train=1000):
    r"""Signal and noise scales :math:`(a_i, s_i)`, :math:`i = 0..N`, of an ``n_steps`` sampler.

    * ``"vp"``: the DDS grid (spec 2.1): ``skip = n_train // N``, times
      :math:`N\cdot\mathrm{skip}-\mathrm{skip}, \dots, \mathrm{skip}, 0` on the linear DDPM
      schedule (:func:`vp_alpha_bar`), then the clean end :math:`(a, s) = (1, 0)` (DDS's padded
      :math:`\bar\alpha_{-1} = 1`);
    * ``"ve"``: :math:`\sigma_i = \sigma_\max(\sigma_\min/\sigma_\max)^{i/(N-1)}`, :math:`a = 1`,
      then :math:`\sigma_N = 0`.

    Returns
    -------
    a, s : ndarray of shape (n_steps + 1,)
        ``s[-1] == 0`` and ``a[-1] == 1``: the last of the ``n_steps`` denoiser evaluations
        gives the output.

    Examples
    --------
    >>> from subspacelab.diffusion import sampling_scales
    >>> a, s = sampling_scales(5)
    >>> a.shape, float(a[-1]), float(s[-1])
    ((6,), 1.0, 0.0)
    >>> bool((a[:-1] ** 2 + s[:-1] ** 2 > 0.999).all())  # variance preserving: a^2 + s^2 = 1
    True
    """
    N = check_param("n_steps", n_steps, "int", low=1)
    check_param("schedule", schedule, "option", options=("vp", "ve"))
    if schedule == "vp":
        check_param("n_train", n_train, "int", low=N)
        ab = vp_alpha_bar(n_train)
        skip = int(n_train) // N
        times = np.arange(0, N * skip, skip)[::-1]
        abar = np.concatenate([ab[times], [1.0]])
        return np.sqrt(abar), np.sqrt(1.0 - abar)
    check_param("sigma_max", sigma_max, "real", low=0.0, closed="neither")
    check_param("sigma_min", sigma_min, "real", low=0.0, high=sigma_max, closed="neither")
    frac = np.arange(N) / max(N - 1, 1)
    sig = np.concatenate([sigma_max * (sigma_min / sigma_max) ** frac, [0.0]])
    return np.ones(N + 1), sig


def ddim_step(x0_hat, eps_hat, scale_next, noise_next, *, scale, noise, eta=0.0, z=None):
    r"""Standard DDIM step (Song et al. 2021) to the less noisy time :math:`t'`.

    With :math:`\sigma_t = \eta_\mathrm{DDIM}\, s'\sqrt{1 - (s' a / (s a'))^2}` (for VP this is
    :math:`\eta\sqrt{(1-\bar\alpha')/(1-\bar\alpha)}\sqrt{1-\bar\alpha/\bar\alpha'}`):

    .. math::

        x_{t'} = a'\hat x_0 + \sqrt{s'^2 - \sigma_t^2}\,\hat\varepsilon + \sigma_t z.

    Parameters
    ----------
    x0_hat, eps_hat : arrays
        Clean and noise estimates at time :math:`t` (the clean one possibly corrected).
    scale_next, noise_next : float
        :math:`a', s'` of the next time.
    scale, noise : float
        :math:`a, s` of the current time (:math:`s > 0`).
    eta : float in [0, 1]
        :math:`\eta_\mathrm{DDIM}`; 0 is the deterministic DDIM ODE step, 1 the DDPM ancestral
        step.
    z : array, optional
        Fresh standard normal noise shaped like ``x0_hat``; required when ``eta > 0``.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.diffusion import ddim_step
    >>> ddim_step(np.ones(2), np.full(2, 2.0), 0.8, 0.6, scale=0.6, noise=0.8)  # eta = 0
    array([2., 2.])
    """
    check_param("eta", eta, "real", low=0.0, high=1.0)
    c = 0.0
    if eta > 0 and noise_next > 0:
        ratio = (noise_next * scale) / (noise * scale_next)
        c = eta * noise_next * math.sqrt(max(0.0, 1.0 - ratio**2))
    out = scale_next * x0_hat + math.sqrt(max(noise_next**2 - c**2, 0.0)) * eps_hat
    if c > 0:
        if z is None:
            raise ValueError("z (fresh noise) is required when eta > 0")
        out = out + c * z
    return out


def dds_renoise(x0_hat, eps_hat, scale_next, noise_next, *, eta=0.85, z=None):
    r"""The re-noising rule of the DDS code (spec 1.3), **not** the DDIM :math:`\eta`:

    .. math::

        x_{t'} = a'\hat x_0 + s'\big(\eta z + \sqrt{1-\eta^2}\,\hat\varepsilon\big).

    :math:`\eta = 0` is deterministic DDIM; :math:`\eta = 1` denoises and re-noises afresh.
    For :math:`\eta > 0` the sampler is under-dispersed: with a 1-D :math:`N(0, 2)` prior and
    50 steps the output variance is 1.41 at :math:`\eta = 0.85` (spec 1.3, checked numerically).

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.diffusion import dds_renoise
    >>> x0_hat, eps_hat = np.ones(3), np.full(3, 2.0)
    >>> dds_renoise(x0_hat, eps_hat, 0.8, 0.6, eta=0.0)  # deterministic: a' x0 + s' eps
    array([2., 2., 2.])
    """
    check_param("eta", eta, "real", low=0.0, high=1.0)
    out = scale_next * x0_hat + (noise_next * math.sqrt(1.0 - eta**2)) * eps_hat
    if eta > 0 and noise_next > 0:
        if z is None:
            raise ValueError("z (fresh noise) is required when eta > 0")
        out = out + (noise_next * eta) * z
    return out


def _real_restricted(operator, x):
    """Whether the images are real while the operator is complex (solve over real images)."""
    xp = get_namespace(x)[0]
    return operator.complex_input and not xp.isdtype(x.dtype, "complex floating")


def dds_data_consistency(operator, x0_hat, y, *, n_iter=5, gamma=None, adjoint_y=None):
    r"""DDS data consistency: ``n_iter`` CG steps started at :math:`\hat x_0` (spec 2.2).

    * ``gamma=None`` (noiseless branch): CG on :math:`A^H A x = A^H y`. The iterates stay in
      :math:`\hat x_0 + \mathcal K(A^HA, A^H r_0) \subset \hat x_0 + \mathrm{range}(A^H)`, so
      the null-space part of :math:`\hat x_0` is kept exactly; converged, the result is the
      projection :math:`\hat x_0 + A^+(y - A\hat x_0)`. For inpainting one step is hard
      replacement.
    * ``gamma > 0`` (proximal branch): CG on :math:`(I + \gamma A^HA)x = \hat x_0 + \gamma A^H y`,
      i.e. :math:`\min_x \tfrac\gamma2\|y - Ax\|^2 + \tfrac12\|x - \hat x_0\|^2`.

    Real images with a complex operator (MRI of a real image) are solved over real :math:`x`:
    the real-linear adjoint is :math:`\mathrm{Re}\,A^H`, so the system uses
    :math:`\mathrm{Re}(A^HA x)` and :math:`\mathrm{Re}(A^Hy)`. Complex images stay complex;
    real and complex are never mixed (the reference code's :math:`(1+i)` defect).

    Parameters
    ----------
    operator : LinearOperator
    x0_hat : array of shape ``(B, *operator.in_shape)``
    y : array of shape ``(B, *operator.out_shape)``
    n_iter : int
        CG iterations :math:`M` (DDS: 5).
    gamma : float > 0 or None
    adjoint_y : array, optional
        Precomputed :math:`A^H y` (real part for real images), to avoid recomputing it.

    Returns
    -------
    array shaped like ``x0_hat``

    Examples
    --------
    With an inpainting mask one noiseless step is hard replacement of the observed pixels:

    >>> import numpy as np
    >>> from subspacelab.diffusion import dds_data_consistency
    >>> from subspacelab.operators import Inpainting
    >>> A = Inpainting(np.array([[1.0, 0.0], [0.0, 1.0]]))
    >>> x0_hat = np.zeros((1, 2, 2))
    >>> y = A.forward(np.full((1, 2, 2), 5.0))
    >>> dds_data_consistency(A, x0_hat, y, n_iter=1)
    array([[[5., 0.],
            [0., 5.]]])
    """
    if not isinstance(operator, LinearOperator):
        raise TypeError(f"operator must be a LinearOperator, got {type(operator).__name__}")
    check_param("n_iter", n_iter, "int", low=0)
    check_param("gamma", gamma, "real", low=0.0, closed="neither", allow_none=True)
    xp, _ = get_namespace(x0_hat, y, names=["x0_hat", "y"])
    real = _real_restricted(operator, x0_hat)
    if adjoint_y is None:
        adjoint_y = operator.adjoint(y)
        if real:
            adjoint_y = xp.real(adjoint_y)

    def gram(v):
        g = operator.normal(v)
        return xp.real(g) if real else g

    if gamma is None:
        H, b = gram, adjoint_y
    else:
        H, b = (lambda v: v + gamma * gram(v)), x0_hat + gamma * adjoint_y
    return conjugate_gradient(H, b, x0=x0_hat, max_iter=n_iter, fixed_iter=True,
                              event_ndim=len(operator.in_shape)).x


def _flat_denoiser(denoiser, xp):
    """Wrap ``D(rows, sigma)`` so it takes images (B, *shape), real or complex."""
    D = denoiser.denoise if hasattr(denoiser, "denoise") else denoiser

    def apply(x, sigma):
        B = x.shape[0]
        if xp.isdtype(x.dtype, "complex floating"):
            ch = complex_to_channels(x)
            out = D(xp.reshape(ch, (B, -1)), sigma)
            return channels_to_complex(xp.reshape(xp.astype(out, ch.dtype), ch.shape))
        out = D(xp.reshape(x, (B, -1)), sigma)
        return xp.reshape(xp.astype(out, x.dtype), x.shape)

    return apply


def diff_z(x, xp):
    """Circular forward difference along axis 0: ``(D_z x)_k = x_{k+1} - x_k``.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.diffusion import diff_z
    >>> diff_z(np.array([1.0, 4.0, 9.0]), np)
    array([ 3.,  5., -8.])
    """
    return xp.roll(x, -1, axis=0) - x


def diff_z_adjoint(v, xp):
    """Adjoint of :func:`diff_z`: ``(D_z^T v)_k = v_{k-1} - v_k`` (circular).

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.diffusion import diff_z, diff_z_adjoint
    >>> rng = np.random.default_rng(0)
    >>> x, v = rng.normal(size=5), rng.normal(size=5)
    >>> bool(np.isclose(diff_z(x, np) @ v, x @ diff_z_adjoint(v, np)))  # <D x, v> = <x, D^T v>
    True
    """
    return xp.roll(v, 1, axis=0) - v


class _TVzADMM:
    """State (d, u) of the warm-started ADMM-TV-z data consistency of the 3-D DDS variant."""

    def __init__(self, operator, Aty, x, rho, lam, n_iter, real, xp):
        self.op, self.Aty, self.rho, self.lam, self.real, self.xp = operator, Aty, rho, lam, real, xp
        self.n_iter = n_iter
        self.d = xp.zeros_like(x)
        self.u = xp.zeros_like(x)

    def _H(self, v):
        xp = self.xp
        g = self.op.normal(v)
        g = xp.real(g) if self.real else g
        return g + self.rho * diff_z_adjoint(diff_z(v, xp), xp)

    def step(self, x0):
        xp = self.xp
        b = self.Aty + self.rho * diff_z_adjoint(self.d - self.u, xp)
        x = conjugate_gradient(self._H, b, x0=x0, max_iter=self.n_iter, fixed_iter=True, event_ndim=x0.ndim).x
        g = diff_z(x, xp)
        v = g + self.u
        t = self.lam / self.rho
        if xp.isdtype(v.dtype, "complex floating"):
            mag = xp.abs(v)
            self.d = xp.astype(xp.maximum(mag - t, xp.zeros_like(mag)) / xp.where(mag > 0, mag, xp.ones_like(mag)), v.dtype) * v
        else:
            self.d = xp.sign(v) * xp.maximum(xp.abs(v) - t, xp.zeros_like(v))
        self.u = v - self.d
        return x


def _normal_like(rng, x, xp, dev):
    if xp.isdtype(x.dtype, "complex floating"):
        rdt = xp.float32 if x.dtype == xp.complex64 else xp.float64
        re = random_normal(rng, tuple(x.shape), xp, device=dev, dtype=rdt)
        im = random_normal(rng, tuple(x.shape), xp, device=dev, dtype=rdt)
        return xp.astype(re, x.dtype) + xp.asarray(1j, dtype=x.dtype) * xp.astype(im, x.dtype)
    return random_normal(rng, tuple(x.shape), xp, device=dev, dtype=x.dtype)


def _check_measurements(operator, y, complex_images, x_init=None):
    """Validate a reconstruction's operator, measurements ``y`` (one row per image) and
    ``complex_images``; return ``(xp, device, real dtype)`` (float32 for float32/complex64 data,
    float64 otherwise)."""
    if not isinstance(operator, LinearOperator):
        raise TypeError(f"operator must be a LinearOperator, got {type(operator).__name__}")
    check_param("complex_images", complex_images, "bool")
    xp, dev = get_namespace(y, x_init, names=["y", "x_init"])
    out_shape = tuple(operator.out_shape)
    if y.ndim != len(out_shape) + 1 or tuple(y.shape[1:]) != out_shape:
        raise ValueError(f"y must have shape (n_samples, {', '.join(map(str, out_shape))}) to match the operator, "
                         f"got {tuple(y.shape)}")
    if not bool(xp.all(xp.isfinite(y))):
        raise ValueError("y must not contain NaN or infinity")
    if complex_images and not operator.complex_input:
        raise TypeError(f"{type(operator).__name__} is a real operator; complex_images must be False")
    if xp.isdtype(y.dtype, "complex floating") and not operator.complex_input:
        raise TypeError("y is complex but the operator is real")
    if y.dtype in (xp.float32, xp.complex64):
        return xp, dev, xp.float32
    return xp, dev, xp.float64


def dds_sample(denoiser, operator, y, *, n_steps=50, cg_iter=5, eta=0.85, gamma=None, renoise="dds",
               schedule="vp", sigma_max=80.0, sigma_min=0.01, complex_images=False, tv_z=None, x_init=None,
               random_state=None, verbose=0):
    r"""Decomposed Diffusion Sampling (DDS; Chung, Lee & Ye, ICLR 2024, arXiv 2303.05754).

    For :math:`i = 0, \dots, N-1` with scales :math:`(a_i, s_i)` from :func:`sampling_scales`:

    1. Tweedie: :math:`\hat x_0 = D(x_i/a_i, s_i/a_i)`,
       :math:`\hat\varepsilon = (x_i - a_i\hat x_0)/s_i`;
    2. data consistency: :math:`\hat x_0' =` :func:`dds_data_consistency` (:math:`M` CG steps
       started at :math:`\hat x_0`);
    3. re-noise to :math:`(a_{i+1}, s_{i+1})` with :func:`dds_renoise` (``renoise="dds"``) or
       :func:`ddim_step` (``renoise="ddim"``); the last step (:math:`s_N = 0`) returns
       :math:`\hat x_0'`.

    :math:`N` denoiser evaluations in all; no gradient through the denoiser. With an isotropic
    Gaussian prior and converged CG the output mean is the exact posterior mean
    :math:`\mu + A^+(y - A\mu)` for any :math:`\eta` (spec 6.4, item 11); with ``renoise="dds"``
    and :math:`\eta > 0` the spread is too small (under-dispersed).

    Parameters
    ----------
    denoiser : object with ``denoise(rows, sigma)`` or callable ``D(rows, sigma)``
        Works on rows ``(B, n_features)``: flattened images, or for complex images the
        flattened :func:`complex_to_channels` layout ``(B, 2, *shape)``.
    operator : LinearOperator
    y : array of shape ``(B, *operator.out_shape)``
        Measurements.
    n_steps : int
        :math:`N` (number of denoiser evaluations).
    cg_iter : int
        CG steps per diffusion step :math:`M`.
    eta : float in [0, 1]
        :math:`\eta` of the chosen re-noising rule.
    gamma : float > 0 or None
        None: noiseless projection branch; a number: proximal branch with weight
        :math:`\gamma`.
    renoise : {"dds", "ddim"}
    schedule : {"vp", "ve"}
    sigma_max, sigma_min : float
        VE noise range.
    complex_images : bool
        Reconstruct complex images (requires a complex operator); otherwise real images.
    tv_z : None or (rho, lam)
        The 3-D variant (DDS ``solver_3d.py``, spec 2.4): the batch axis of ``y`` is the slice
        axis z of one volume, and data consistency is one ADMM iteration per diffusion step for
        :math:`\min_x \tfrac12\|Ax - y\|^2 + \lambda\|D_z x\|_1`, with :math:`D_z` the
        circular forward difference along z:
        :math:`x \leftarrow \mathrm{CG}_M(A^HA + \rho D_z^TD_z,\ A^Hy + \rho D_z^T(d - u);
        \text{init } \hat x_0)`, :math:`d \leftarrow \mathcal S_{\lambda/\rho}(D_z x + u)`,
        :math:`u \leftarrow u + D_z x - d`; :math:`d, u` persist across diffusion steps
        (warm start). The reference uses :math:`\rho = 10` with :math:`\lambda = 0.04`
        (sparse view) or 0.4 (limited angle).
    x_init : array of shape ``(B, *operator.in_shape)``, optional
        Starting state :math:`x_0` (default: :math:`N(0, I)` for VP, :math:`\sigma_\max N(0, I)`
        for VE).
    random_state : int, Generator or None
        Seed of the starting state and of the re-noising draws (drawn with NumPy, moved to
        the device: the same seed gives the same draw on every backend).
    verbose : int

    Returns
    -------
    array of shape ``(B, *operator.in_shape)``

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.diffusion import GaussianDenoiser, dds_sample
    >>> from subspacelab.operators import Inpainting
    >>> rng = np.random.default_rng(0)
    >>> D = GaussianDenoiser().fit(rng.normal(size=(200, 6)))
    >>> A = Inpainting(np.array([1.0, 1, 0, 1, 0, 1]))
    >>> y = A.forward(np.ones((1, 6)))
    >>> x = dds_sample(D, A, y, n_steps=10, random_state=0)
    >>> bool(np.allclose(A.forward(x), y))
    True
    """
    N = check_param("n_steps", n_steps, "int", low=1)
    M = check_param("cg_iter", cg_iter, "int", low=0)
    check_param("eta", eta, "real", low=0.0, high=1.0)
    check_param("renoise", renoise, "option", options=("dds", "ddim"))
    check_param("verbose", verbose, "int", low=0)
    if tv_z is not None:
        if gamma is not None:
            raise ValueError("tv_z (3-D ADMM data consistency) and gamma (proximal branch) exclude each other")
        try:
            rho, lam = (float(v) for v in tv_z)
        except (TypeError, ValueError):
            raise TypeError(f"tv_z must be None or a pair (rho, lam), got {tv_z!r}") from None
        check_param("rho", rho, "real", low=0.0, closed="neither")
        check_param("lam", lam, "real", low=0.0)
    xp, dev, rdt = _check_measurements(operator, y, complex_images, x_init)
    in_shape = tuple(operator.in_shape)
    a, s = sampling_scales(N, schedule, sigma_max=sigma_max, sigma_min=sigma_min)
    B = y.shape[0]
    dt = (xp.complex64 if rdt == xp.float32 else xp.complex128) if complex_images else rdt
    rng = check_random_state(random_state)
    if x_init is None:
        x = _normal_like(rng, xp.zeros((B, *in_shape), dtype=dt, device=dev), xp, dev)
        if schedule == "ve":
            x = float(s[0]) * x
    else:
        if tuple(x_init.shape) != (B, *in_shape):
            raise ValueError(f"x_init must have shape {(B, *in_shape)}, got {tuple(x_init.shape)}")
        x = xp.astype(x_init, dt)
    Aty = operator.adjoint(y)
    if not complex_images and operator.complex_input:
        Aty = xp.real(Aty)
    Aty = xp.astype(Aty, dt)
    D = _flat_denoiser(denoiser, xp)
    if tv_z is not None:
        admm = _TVzADMM(operator, Aty, x, rho, lam, M, not complex_images and operator.complex_input, xp)
    for i in range(N):
        x0, eps = tweedie(D, x, float(a[i]), float(s[i]))
        if tv_z is None:
            x0 = dds_data_consistency(operator, x0, y, n_iter=M, gamma=gamma, adjoint_y=Aty)
        else:
            x0 = admm.step(x0)
        if verbose:
            print(f"DDS step {i + 1}/{N}: sigma={s[i] / a[i]:.4g}")
        if s[i + 1] == 0:
            break
        z = _normal_like(rng, x0, xp, dev) if eta > 0 else None
        if renoise == "dds":
            x = dds_renoise(x0, eps, float(a[i + 1]), float(s[i + 1]), eta=eta, z=z)
        else:
            x = ddim_step(x0, eps, float(a[i + 1]), float(s[i + 1]), scale=float(a[i]), noise=float(s[i]),
                          eta=eta, z=z)
    return x0
