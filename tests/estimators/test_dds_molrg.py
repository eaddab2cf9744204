"""DDS with a MoLRG prior against the exact posterior of a mixture of low-rank Gaussians (the second gold standard).

With prior :math:`\\sum_k \\pi_k N(\\mu_k, \\Sigma_k)`, :math:`\\Sigma_k = U_k\\Lambda_kU_k^T + \\delta^2 I`, and
:math:`y = Mx + e`, :math:`e \\sim N(0, \\sigma_y^2 I)`, the posterior is the Gaussian mixture with weights
:math:`\\propto \\pi_k N(y; M\\mu_k, M\\Sigma_kM^T + \\sigma_y^2 I)` and component means
:math:`\\mu_k + \\Sigma_kM^T(M\\Sigma_kM^T + \\sigma_y^2I)^{-1}(y - M\\mu_k)` (specs/diffusion_flow.md 6.2).

What DDS provably equals (spec 6.4, items 11-12; rate_reduction.md 4):

* DDS is an exact posterior-mean sampler only for an isotropic Gaussian prior (the first gold standard, in
  test_dds.py; here once more through the MoLRG code path);
* for a MoLRG prior that is mirror-symmetric across the null space of :math:`M` (component 2 is the reflection
  :math:`R = M^+M - (I - M^+M)` of component 1) every step of DDS commutes with :math:`R`, so the DDS mean equals
  the exact posterior mean, although every single sample sits in one of the two modes;
* in general (anisotropic components, unequal weights) DDS is biased: an approximation with a loose bound.
"""

import math

import numpy as np
import pytest
from scipy.stats import multivariate_normal
from sklearn import config_context

from subspacelab import DDSReconstructor, MoLRGDenoiser
from subspacelab.diffusion import dds_sample
from tests._dense_operator import Dense


def exact_posterior(means, bases, lams, delta2, weights, M, y, noise_std):
    """Dense reference: posterior weights, component means and mean of a MoLRG prior under y = Mx + e."""
    n = M.shape[1]
    log_w, comp = [], []
    for mu, U, lam, pi in zip(means, bases, lams, weights):
        S = U @ np.diag(lam) @ U.T + delta2 * np.eye(n)
        Sy = M @ S @ M.T + noise_std**2 * np.eye(M.shape[0])
        log_w.append(np.log(pi) + multivariate_normal(M @ mu, Sy).logpdf(y))
        comp.append(mu + S @ M.T @ np.linalg.solve(Sy, y - M @ mu))
    log_w = np.array(log_w)
    w = np.exp(log_w - log_w.max())
    w /= w.sum()
    comp = np.array(comp)
    return w, comp, w @ comp


def _problem(seed=1, n=6, m=3, d=2):
    rng = np.random.default_rng(seed)
    M = rng.normal(size=(m, n))
    bases = [np.linalg.qr(rng.normal(size=(n, d)))[0] for _ in range(2)]
    means = [rng.normal(size=n) * 1.5 for _ in range(2)]
    return rng, M, bases, means


def test_exact_posterior_reference_matches_monte_carlo():
    """The dense closed form (the gold standard itself) against self-normalised importance sampling."""
    rng, M, bases, means = _problem(seed=3)
    lams, delta2, pis, sy = [np.array([1.0, 0.3]), np.array([0.6, 0.2])], 0.05, [0.6, 0.4], 0.5
    n, N = M.shape[1], 400_000
    k = rng.choice(2, size=N, p=pis)
    a = rng.normal(size=(N, 2))
    X = np.empty((N, n))
    for j in range(2):
        sel = k == j
        X[sel] = means[j] + (a[sel] * np.sqrt(lams[j])) @ bases[j].T
    X += math.sqrt(delta2) * rng.normal(size=X.shape)
    y = M @ X[0] + sy * rng.normal(size=M.shape[0])
    w, _, post = exact_posterior(means, bases, lams, delta2, pis, M, y, sy)
    lw = -0.5 * np.sum((X @ M.T - y) ** 2, axis=1) / sy**2
    iw = np.exp(lw - lw.max())
    iw /= iw.sum()
    np.testing.assert_allclose(iw @ X, post, atol=0.03)
    np.testing.assert_allclose([iw[k == 0].sum(), iw[k == 1].sum()], w, atol=0.02)
    # K = 1: the Gaussian formula mu + Sigma M^T (M Sigma M^T + s^2 I)^-1 (y - M mu)
    S = bases[0] @ np.diag(lams[0]) @ bases[0].T + delta2 * np.eye(n)
    single = exact_posterior(means[:1], bases[:1], lams[:1], delta2, [1.0], M, y, sy)[2]
    np.testing.assert_allclose(single, means[0] + S @ M.T @ np.linalg.solve(M @ S @ M.T + sy**2 * np.eye(3), y - M @ means[0]))


@pytest.mark.parametrize("eta", [0.85, 0.0])
def test_mirror_symmetric_molrg_dds_mean_is_exact_posterior_mean(backend, eta):
    """Exact: a 2-component MoLRG symmetric under the null-space reflection R; DDS's mean = the posterior mean."""
    rng, M, bases, means = _problem()
    P = np.linalg.pinv(M) @ M
    R = P - (np.eye(M.shape[1]) - P)
    U, mu, lam, delta2 = bases[0], means[0], np.array([1.0, 0.3]), 0.05
    x_true = mu + U @ (np.sqrt(lam) * rng.normal(size=2))
    y = M @ x_true
    w, comp, post = exact_posterior([mu, R @ mu], [U, R @ U], [lam, lam], delta2, [0.5, 0.5], M, y, 0.0)
    # a genuinely bimodal posterior: the two modes are far apart and the mean lies between them
    assert np.allclose(w, 0.5) and np.linalg.norm(comp[0] - comp[1]) > 1.0
    B = 3000
    with config_context(array_api_dispatch=True):
        D = MoLRGDenoiser.from_subspaces([backend.asarray(U), backend.asarray(R @ U)],
                                         variances=[backend.asarray(lam)] * 2,
                                         means=backend.asarray(np.stack([mu, R @ mu])), noise_variance=delta2)
        A = Dense(backend.asarray(M), backend.xp, backend.device)
        X = backend.to_numpy(dds_sample(D, A, backend.asarray(np.tile(y, (B, 1))), n_steps=20, cg_iter=5, eta=eta,
                                        random_state=0))
    se = np.sqrt(np.diag(np.cov(X.T)).max() / B)  # about 0.009
    np.testing.assert_allclose(X.mean(axis=0), post, atol=5 * se)
    np.testing.assert_allclose(X @ M.T, np.tile(y, (B, 1)), atol=1e-8)
    # each sample lies near one mode (not at the mean), half of them near each
    dist = np.stack([np.linalg.norm(X - c, axis=1) for c in comp])
    assert np.median(dist.min(axis=0)) < 0.5 * np.linalg.norm(comp[0] - post)
    assert abs(np.mean(dist.argmin(axis=0) == 0) - 0.5) < 0.05


def test_isotropic_molrg_component_dds_mean_is_exact():
    """K = 1 MoLRG with an isotropic covariance (zero latent variance, floor lam): DDS mean = mu + M^+(y - M mu)."""
    rng, M, bases, means = _problem(seed=5)
    lam, B = 0.5, 3000
    D = MoLRGDenoiser.from_subspaces(bases[:1], variances=[np.zeros(2)], means=means[0][None], noise_variance=lam)
    y = M @ (means[0] + math.sqrt(lam) * rng.normal(size=M.shape[1]))
    post = exact_posterior(means[:1], bases[:1], [np.zeros(2)], lam, [1.0], M, y, 0.0)[2]
    np.testing.assert_allclose(post, means[0] + np.linalg.pinv(M) @ (y - M @ means[0]), atol=1e-10)
    est = DDSReconstructor(Dense(M), prior=D, n_steps=20, cg_iter=5, random_state=0).fit(rng.normal(size=(3, 6)))
    X = est.predict(np.tile(y, (B, 1)))
    np.testing.assert_allclose(X.mean(axis=0), post, atol=0.05)


def test_anisotropic_molrg_dds_is_a_biased_approximation():
    """General MoLRG (unequal weights, anisotropic components): DDS approximates the posterior mean (loose bound)
    and is biased beyond Monte Carlo error (spec 6.4 item 11); its samples pick the right component."""
    rng, M, bases, means = _problem()
    lams, delta2, pis = [np.array([1.0, 0.3]), np.array([0.6, 0.2])], 0.05, [0.7, 0.3]
    D = MoLRGDenoiser.from_subspaces(bases, weights=np.array(pis), variances=lams, means=np.array(means),
                                     noise_variance=delta2)
    x_true = means[0] + bases[0] @ (np.sqrt(lams[0]) * rng.normal(size=2)) + math.sqrt(delta2) * rng.normal(size=6)
    y = M @ x_true
    w, comp, post = exact_posterior(means, bases, lams, delta2, pis, M, y, 0.0)
    assert w[0] > 0.999  # the data identify the component
    B = 4000
    X = dds_sample(D, Dense(M), np.tile(y, (B, 1)), n_steps=50, cg_iter=5, eta=0.85, random_state=0)
    scale = np.linalg.norm(post - np.linalg.pinv(M) @ y)  # what the prior adds to the minimum-norm solution
    err = np.linalg.norm(X.mean(axis=0) - post)
    se = np.sqrt(np.trace(np.cov(X.T)) / B)
    assert err < 0.25 * scale  # measured: 0.14
    assert err > 3 * se  # biased: not a posterior sampler
    dist = np.stack([np.linalg.norm(X - c, axis=1) for c in comp])
    assert np.mean(dist.argmin(axis=0) == 0) > 0.95  # exact: 1.0
