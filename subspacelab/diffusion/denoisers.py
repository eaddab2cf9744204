r"""The denoiser interface :math:`D(z, \sigma) = E[x_0 \mid z = x_0 + \sigma n]` and the exact
Gaussian denoiser.

Spec: specs/diffusion_flow.md sections 1.2 and 6. Every parameterisation maps onto the one
interface (EDM convention, Karras et al. 2022):

* VP: :math:`x_t = a x_0 + s\varepsilon` with :math:`a = \sqrt{\bar\alpha_t}`,
  :math:`s = \sqrt{1-\bar\alpha_t}`: :math:`\hat x_0 = D(x_t/a, s/a)`,
  :math:`\hat\varepsilon = (x_t - a\hat x_0)/s`;
* VE: :math:`a = 1`, :math:`s = \sigma_t`;
* EDM: :math:`x_t = s(x_0 + \sigma n)`: :math:`a = s`, noise :math:`s\sigma`;
* score: :math:`\nabla\log p_t(x_t) = (a\hat x_0 - x_t)/s^2 = -\hat\varepsilon/s`.

:func:`tweedie` does the conversion for any :math:`(a, s)`; :func:`vp_sigma` and
:func:`sigma_to_alpha_bar` convert between a VP schedule and the equivalent VE noise level.
"""

from __future__ import annotations

import math
import numbers

from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils.validation import check_is_fitted

from .._backend import check_random_state, check_same_namespace, get_namespace, random_normal
from .._validation import check_param, validate_input
from ._lowrank import mixture_posterior

__all__ = ["DenoiserMixin", "GaussianDenoiser", "check_sigma", "sigma_to_alpha_bar", "tweedie", "vp_sigma"]


def check_sigma(sigma, n, xp, device, dtype):
    """Validate noise levels and return their squares as an ``(n,)`` array.

    ``sigma`` is a positive finite number or an array of shape ``()`` or ``(n,)`` (one level
    per sample) in the namespace of the data.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab._backend import get_namespace
    >>> from subspacelab.diffusion import check_sigma
    >>> z = np.zeros((2, 5))
    >>> xp, device = get_namespace(z)
    >>> check_sigma(0.5, 2, xp, device, xp.float64)
    array([0.25, 0.25])
    >>> check_sigma(np.array([1.0, 2.0]), 2, xp, device, xp.float64)  # one level per sample
    array([1., 4.])
    """
    if isinstance(sigma, bool) or not (isinstance(sigma, numbers.Real) or hasattr(sigma, "shape")):
        raise TypeError(f"sigma must be a positive number or an array, got {type(sigma).__name__}")
    if isinstance(sigma, numbers.Real):
        check_param("sigma", sigma, "real", low=0.0, closed="neither")
        return xp.full((n,), float(sigma) ** 2, dtype=dtype, device=device)
    sxp, sdev = get_namespace(sigma, names=["sigma"])
    if sxp is not xp or sdev != device:
        raise TypeError(f"sigma must be an array of the data's namespace {xp.__name__!r} on {device!r}")
    s = sigma
    if s.ndim > 1 or (s.ndim == 1 and s.shape[0] != n):
        raise ValueError(f"sigma must be a number or an array of shape ({n},), got shape {tuple(s.shape)}")
    s = xp.astype(s, dtype)
    if not bool(xp.all(xp.isfinite(s))) or not bool(xp.all(s > 0)):
        raise ValueError("sigma must be finite and > 0")
    return xp.broadcast_to(s * s, (n,))


class DenoiserMixin:
    r"""Helpers shared by every denoiser implementing ``denoise(z, sigma)``.

    ``exact`` is True for analytic priors (exact posterior means), which tests use to choose
    tolerances.

    Examples
    --------
    A denoiser only needs ``denoise(z, sigma)``; the mixin adds calling and the score. Here the
    exact posterior mean under a standard normal prior, ``z / (1 + sigma**2)``:

    >>> import numpy as np
    >>> from subspacelab.diffusion import DenoiserMixin
    >>> class StandardNormalPrior(DenoiserMixin):
    ...     exact = True
    ...     def denoise(self, z, sigma):
    ...         return z / (1.0 + sigma**2)
    >>> D = StandardNormalPrior()
    >>> D(np.array([[2.0, -1.0]]), 1.0)
    array([[ 1. , -0.5]])
    >>> D.score_function(np.array([[2.0, -1.0]]), 1.0)  # (D(z) - z) / sigma^2 = -z / 2
    array([[-1. ,  0.5]])
    """

    exact = False

    def __call__(self, z, sigma):
        return self.denoise(z, sigma)

    def score_function(self, z, sigma):
        r"""Score of the noised density, :math:`\nabla_z \log p_\sigma(z) = (D(z,\sigma) - z)/\sigma^2`."""
        xp, dev = get_namespace(z, names=["z"])
        s2 = check_sigma(sigma, z.shape[0], xp, dev, z.dtype)
        shape = (z.shape[0],) + (1,) * (z.ndim - 1)
        return (self.denoise(z, sigma) - z) / xp.reshape(s2, shape)


def tweedie(denoiser, x_t, scale, noise):
    r"""Clean and noise estimates for :math:`x_t = a x_0 + s\varepsilon` from a denoiser.

    .. math::

        \hat x_0 = D(x_t / a, s / a), \qquad \hat\varepsilon = (x_t - a \hat x_0) / s.

    Parameters
    ----------
    denoiser : object with ``denoise(z, sigma)`` (or a callable ``D(z, sigma)``)
    x_t : array of shape (B, ...)
    scale : float
        Signal scale :math:`a > 0` (VP: :math:`\sqrt{\bar\alpha_t}`; VE: 1).
    noise : float
        Noise scale :math:`s > 0` (VP: :math:`\sqrt{1-\bar\alpha_t}`; VE: :math:`\sigma_t`).

    Returns
    -------
    x0_hat, eps_hat : arrays shaped like ``x_t``

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.diffusion import GaussianDenoiser, tweedie
    >>> X = np.random.default_rng(0).normal(size=(500, 3))
    >>> D = GaussianDenoiser().fit(X)
    >>> x0, eps = tweedie(D, X[:2] * 0.8 + 0.6 * X[2:4], 0.8, 0.6)
    >>> x0.shape, eps.shape
    ((2, 3), (2, 3))
    """
    check_param("scale", scale, "real", low=0.0, closed="neither")
    check_param("noise", noise, "real", low=0.0, closed="neither")
    D = denoiser.denoise if hasattr(denoiser, "denoise") else denoiser
    x0 = D(x_t / scale, noise / scale)
    return x0, (x_t - scale * x0) / noise


def vp_sigma(alpha_bar):
    r"""VE noise level equivalent to a VP time: :math:`\sigma = \sqrt{(1-\bar\alpha)/\bar\alpha}`.

    Examples
    --------
    >>> from subspacelab.diffusion import vp_sigma
    >>> float(vp_sigma(0.5)), float(vp_sigma(0.2))
    (1.0, 2.0)
    """
    check_param("alpha_bar", alpha_bar, "real", low=0.0, high=1.0, closed="right")
    return math.sqrt((1.0 - alpha_bar) / alpha_bar)


def sigma_to_alpha_bar(sigma):
    r"""Inverse of :func:`vp_sigma`: :math:`\bar\alpha = 1/(1+\sigma^2)`.

    Examples
    --------
    >>> from subspacelab.diffusion import sigma_to_alpha_bar, vp_sigma
    >>> sigma_to_alpha_bar(1.0)
    0.5
    >>> float(vp_sigma(sigma_to_alpha_bar(3.0)))
    3.0
    """
    check_param("sigma", sigma, "real", low=0.0)
    return 1.0 / (1.0 + sigma**2)


class GaussianDenoiser(DenoiserMixin, DensityMixin, BaseEstimator):
    r"""Exact denoiser of a Gaussian prior fitted to data (full or low-rank plus isotropic).

    The prior is :math:`N(\mu, \Sigma)` with either the full sample covariance, or the
    probabilistic-PCA covariance :math:`\Sigma = V\Lambda V^T + \delta^2 (I - VV^T)` keeping
    the top ``n_components`` eigenpairs and setting :math:`\delta^2` to the mean of the
    discarded eigenvalues (Tipping & Bishop 1999). Its posterior mean is linear:

    .. math::

        D(z, \sigma) = \mu + V\,\mathrm{diag}\Big(\frac{\lambda_j}{\lambda_j + \sigma^2}\Big) V^T (z-\mu)
            + \frac{\delta^2}{\delta^2+\sigma^2} (I - VV^T)(z - \mu)

    (specs/diffusion_flow.md section 6.2, item 1). It is the :math:`K = 1` case of
    :class:`~subspacelab.MoLRGDenoiser`.

    Parameters
    ----------
    n_components : int or None, default None
        Rank of the low-rank part; None keeps the full covariance.
    reg_covar : float, default 1e-6
        Added to every variance so the density is proper even for rank-deficient data.

    Attributes
    ----------
    mean_ : array of shape (n_features,)
    components_ : array of shape (n_components, n_features)
        Principal directions (rows), largest variance first.
    explained_variance_ : array of shape (n_components,)
        Variances along ``components_`` (``reg_covar`` included).
    noise_variance_ : float
        :math:`\delta^2` (``reg_covar`` included; ``reg_covar`` alone for a full covariance).
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.diffusion import GaussianDenoiser
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(2000, 2)) * [3.0, 0.5]
    >>> D = GaussianDenoiser().fit(X)
    >>> np.round(D.denoise(np.array([[3.0, 3.0]]), 1.0), 1)
    array([[2.7, 0.6]])
    """

    exact = True

    def __init__(self, n_components=None, reg_covar=1e-6):
        self.n_components = n_components
        self.reg_covar = reg_covar

    def fit(self, X, y=None):
        """Fit the mean and covariance of ``X`` (n_samples, n_features)."""
        X, xp, dev = validate_input(self, X, reset=True, ensure_min_samples=2)
        n, p = X.shape
        k = check_param("n_components", self.n_components, "int", low=1, high=p, allow_none=True)
        reg = check_param("reg_covar", self.reg_covar, "real", low=0.0)
        self.mean_ = xp.mean(X, axis=0)
        Xc = X - self.mean_
        if k is not None and k < p and n < p and k <= n:
            # wide data: the thin SVD of the n x p data gives the top eigenpairs without the
            # p x p covariance; the other p - n eigenvalues are 0
            _, S, Vt = xp.linalg.svd(Xc, full_matrices=False)
            evals = S * S / (n - 1)
            evecs = Vt.T
            noise = float(xp.sum(evals[k:])) / (p - k)
        else:
            evals, evecs = xp.linalg.eigh(Xc.T @ Xc / (n - 1))
            evals = xp.flip(xp.maximum(evals, xp.zeros_like(evals)), axis=0)
            evecs = xp.flip(evecs, axis=1)
            if k is None or k == p:
                k = p
                noise = 0.0
            else:
                noise = float(xp.mean(evals[k:]))
        self.components_ = evecs[:, :k].T
        self.explained_variance_ = evals[:k] + reg
        self.noise_variance_ = noise + reg
        return self

    def _posterior(self, Z, sigma2, need_mean=True):
        xp, dev = get_namespace(Z)
        V = self.components_.T[None, :, :]
        lam = (self.explained_variance_ - self.noise_variance_)[None, :]
        zero = xp.zeros((1,), dtype=Z.dtype, device=dev)
        return mixture_posterior(Z, sigma2, self.mean_[None, :], V, lam, self.noise_variance_, zero, xp, need_mean=need_mean)

    def _check_input(self, Z, method):
        check_is_fitted(self)
        check_same_namespace(Z, self, attribute="mean_", method=method)
        return validate_input(self, Z, reset=False)

    def denoise(self, Z, sigma):
        r"""Posterior mean :math:`E[x_0 \mid z = x_0 + \sigma n]` for rows of ``Z``.

        Parameters
        ----------
        Z : array of shape (n_samples, n_features)
        sigma : float > 0 or array of shape (n_samples,)
        """
        Z, xp, dev = self._check_input(Z, "denoise")
        s2 = check_sigma(sigma, Z.shape[0], xp, dev, Z.dtype)
        return self._posterior(Z, s2)[2]

    def score_samples(self, X, sigma=None):
        """Log-density of each row under the fitted Gaussian, noised by ``sigma`` if given."""
        X, xp, dev = self._check_input(X, "score_samples")
        s2 = xp.zeros((X.shape[0],), dtype=X.dtype, device=dev) if sigma is None else check_sigma(sigma, X.shape[0], xp, dev, X.dtype)
        return self._posterior(X, s2, need_mean=False)[0]

    def score(self, X, y=None):
        """Mean log-likelihood of ``X`` under the fitted Gaussian."""
        xp, _ = get_namespace(self.mean_)
        return float(xp.mean(self.score_samples(X)))

    def sample(self, n_samples=1, random_state=None):
        """Draw ``n_samples`` exact samples of the fitted Gaussian."""
        check_is_fitted(self)
        check_param("n_samples", n_samples, "int", low=1)
        xp, dev = get_namespace(self.mean_)
        rng = check_random_state(random_state)
        p, k = self.mean_.shape[0], self.components_.shape[0]
        dt = self.mean_.dtype
        a = random_normal(rng, (n_samples, k), xp, device=dev, dtype=dt)
        e = random_normal(rng, (n_samples, p), xp, device=dev, dtype=dt)
        V = self.components_.T
        e = e - (e @ V) @ V.T  # isotropic part off the principal subspace
        return self.mean_ + (a * xp.sqrt(self.explained_variance_)) @ self.components_ + math.sqrt(self.noise_variance_) * e

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.array_api_support = True
        return tags
