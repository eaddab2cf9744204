r"""Exact Tweedie denoiser of a mixture of low-rank-plus-isotropic Gaussians (array API).

Component :math:`k`: :math:`x_0 \sim N(\mu_k, \Sigma_k)` with
:math:`\Sigma_k = U_k\,\mathrm{diag}(\lambda_k)\,U_k^T + \delta^2 I`, :math:`U_k` an
:math:`n\times d` matrix with orthonormal columns (zero columns pad unequal dimensions: a
zero column with :math:`\lambda = 0` changes nothing). Observed :math:`z = x_0 + \sigma n`.
With :math:`r_k = z - \mu_k`, :math:`c_k = U_k^T r_k`, :math:`v = \lambda + \delta^2`:

.. math::

    E[x_0 \mid z, k] = \mu_k + \tfrac{\delta^2}{\delta^2+\sigma^2} (I - U_kU_k^T) r_k
        + U_k\Big[\tfrac{v}{v+\sigma^2} \odot c_k\Big],

    \log N(z; \mu_k, \Sigma_k + \sigma^2 I) = -\tfrac12\Big[\tfrac{\|r_k\|^2 - \|c_k\|^2}{\delta^2+\sigma^2}
        + \sum_j \tfrac{c_{kj}^2}{v_j+\sigma^2} + \sum_j \log(v_j+\sigma^2)
        + (n-d)\log(\delta^2+\sigma^2) + n\log 2\pi\Big],

and :math:`D(z,\sigma) = \sum_k w_k E[x_0\mid z,k]` with
:math:`w = \mathrm{softmax}_k(\log\pi_k + \log N_k)` (specs/diffusion_flow.md section 6.2,
specs/rate_reduction.md section 4.1; Woodbury for the inverse, the matrix-determinant lemma
for the log-determinant).
"""

from __future__ import annotations

import math

__all__ = ["mixture_posterior"]


def _logsumexp(a, xp, axis):
    m = xp.max(a, axis=axis, keepdims=True)
    return xp.squeeze(m, axis=axis) + xp.log(xp.sum(xp.exp(a - m), axis=axis))


def mixture_posterior(z, sigma2, means, bases, variances, noise_var, log_weights, xp, *, need_mean=True):
    """Posterior quantities of the low-rank Gaussian mixture at noise variances ``sigma2``.

    Parameters
    ----------
    z : (B, n) array
    sigma2 : (B,) array of noise variances, >= 0 (0 only with ``noise_var > 0``)
    means : (K, n); bases : (K, n, d); variances : (K, d) latent variances (lambda)
    noise_var : float, the isotropic floor delta^2 >= 0
    log_weights : (K,) log mixing proportions

    Returns
    -------
    log_density : (B,) array, log p_sigma(z)
    resp : (K, B) posterior component probabilities
    mean : (B, n) posterior mean E[x0 | z] (None unless ``need_mean``)
    """
    n = z.shape[-1]
    d = bases.shape[-1]
    r = z[None, :, :] - means[:, None, :]  # (K, B, n)
    c = xp.matmul(r, bases)  # (K, B, d)
    v = variances + noise_var  # (K, d)
    iso = noise_var + sigma2[None, :]  # (1, B)
    denom = v[:, None, :] + sigma2[None, :, None]  # (K, B, d)
    Ut = xp.permute_dims(bases, (0, 2, 1))
    perp = r - xp.matmul(c, Ut)  # component of r off the subspace (computed, not subtracted norms)
    quad = xp.sum(perp * perp, axis=-1) / iso + xp.sum(c * c / denom, axis=-1)
    logdet = xp.sum(xp.log(denom), axis=-1) + (n - d) * xp.log(iso)
    ll = -0.5 * (quad + logdet + n * math.log(2 * math.pi))  # (K, B)
    joint = ll + log_weights[:, None]
    log_density = _logsumexp(joint, xp, axis=0)
    resp = xp.exp(joint - log_density[None, :])
    if not need_mean:
        return log_density, resp, None
    iso_shrink = (noise_var / iso)[..., None]  # (1, B, 1)
    comp = means[:, None, :] + iso_shrink * perp + xp.matmul((v[:, None, :] / denom) * c, Ut)
    mean = xp.sum(resp[:, :, None] * comp, axis=0)
    return log_density, resp, mean
