"""Denoiser interface, VP/VE conversions and the exact Gaussian denoiser (spec 6.1-6.2, 8.8)."""

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from subspacelab.diffusion import GaussianDenoiser, check_sigma, sigma_to_alpha_bar, tweedie, vp_sigma


def _data(rng, n=400, p=5):
    A = rng.normal(size=(p, p))
    return rng.normal(size=(n, p)) @ A + rng.normal(size=p)


def test_full_covariance_is_exact_linear_posterior_mean(rng):
    X = _data(rng)
    D = GaussianDenoiser(reg_covar=0.0).fit(X)
    mu, S = X.mean(0), np.cov(X.T)
    Z = rng.normal(size=(7, 5))
    for sigma in [0.1, 1.0, 5.0]:
        expected = mu + (Z - mu) @ np.linalg.solve(S + sigma**2 * np.eye(5), S).T
        np.testing.assert_allclose(D.denoise(Z, sigma), expected, atol=1e-10)
    # per-sample noise levels
    sig = np.array([0.1, 1, 2, 3, 4, 5, 6.0])
    got = D.denoise(Z, sig)
    for i, s in enumerate(sig):
        np.testing.assert_allclose(got[i], D.denoise(Z[i : i + 1], float(s))[0], atol=1e-12)


def test_low_rank_plus_isotropic(rng):
    X = _data(rng, p=6)
    D = GaussianDenoiser(n_components=2, reg_covar=0.0).fit(X)
    evals, evecs = np.linalg.eigh(np.cov(X.T))
    evals, evecs = evals[::-1], evecs[:, ::-1]
    delta2 = evals[2:].mean()
    V = evecs[:, :2]
    S = V @ np.diag(evals[:2]) @ V.T + delta2 * (np.eye(6) - V @ V.T)
    Z = rng.normal(size=(4, 6))
    sigma = 0.8
    expected = X.mean(0) + (Z - X.mean(0)) @ np.linalg.solve(S + sigma**2 * np.eye(6), S).T
    np.testing.assert_allclose(D.denoise(Z, sigma), expected, atol=1e-10)
    np.testing.assert_allclose(D.score_samples(Z), multivariate_normal(X.mean(0), S).logpdf(Z), atol=1e-9)
    np.testing.assert_allclose(D.score_samples(Z, sigma=sigma),
                               multivariate_normal(X.mean(0), S + sigma**2 * np.eye(6)).logpdf(Z), atol=1e-9)


def test_limits(rng):
    X = _data(rng)
    D = GaussianDenoiser().fit(X)
    Z = rng.normal(size=(3, 5))
    np.testing.assert_allclose(D.denoise(Z, 1e-6), Z, atol=1e-6)
    np.testing.assert_allclose(D.denoise(Z, 1e6), np.broadcast_to(X.mean(0), Z.shape), atol=1e-6)


def test_score_is_tweedie_gradient(rng):
    X = _data(rng)
    D = GaussianDenoiser(n_components=2).fit(X)
    z = rng.normal(size=(1, 5))
    sigma, h = 0.7, 1e-5
    fd = np.array([(D.score_samples(z + h * e, sigma=sigma) - D.score_samples(z - h * e, sigma=sigma))[0] / (2 * h)
                   for e in np.eye(5)])
    np.testing.assert_allclose(D.score_function(z, sigma)[0], fd, rtol=1e-6, atol=1e-7)


def test_sample_moments(rng):
    X = _data(rng)
    D = GaussianDenoiser(n_components=3).fit(X)
    S = D.sample(40000, random_state=0)
    model_cov = (D.components_.T * D.explained_variance_) @ D.components_ + D.noise_variance_ * (
        np.eye(5) - D.components_.T @ D.components_)
    np.testing.assert_allclose(S.mean(0), D.mean_, atol=0.1)
    np.testing.assert_allclose(np.cov(S.T), model_cov, rtol=0.05, atol=0.1)


def test_tweedie_vp_ve_agree(rng):
    X = _data(rng)
    D = GaussianDenoiser().fit(X)
    x0 = X[:4]
    eps = rng.normal(size=x0.shape)
    alpha_bar = 0.36
    a, s = np.sqrt(alpha_bar), np.sqrt(1 - alpha_bar)
    x_t = a * x0 + s * eps
    x0_vp, eps_vp = tweedie(D, x_t, a, s)
    sigma = vp_sigma(alpha_bar)
    np.testing.assert_allclose(x0_vp, D.denoise(x_t / a, sigma), atol=1e-12)  # VE view of the same point
    np.testing.assert_allclose(a * x0_vp + s * eps_vp, x_t, atol=1e-12)
    np.testing.assert_allclose(sigma_to_alpha_bar(sigma), alpha_bar)
    # EDM form x = s (x0 + sigma n): scale s, noise s * sigma
    x0_edm, _ = tweedie(D, 2.0 * (x0 + 0.5 * eps), 2.0, 1.0)
    np.testing.assert_allclose(x0_edm, D.denoise(x0 + 0.5 * eps, 0.5), atol=1e-12)
    # a callable works too
    x0_c, _ = tweedie(D.denoise, x_t, a, s)
    np.testing.assert_allclose(x0_c, x0_vp)


def test_every_backend(backend, rng):
    from sklearn import config_context

    X = _data(rng, n=60)
    Z = rng.normal(size=(3, 5))
    ref = GaussianDenoiser(n_components=2).fit(X)
    with config_context(array_api_dispatch=True):
        D = GaussianDenoiser(n_components=2).fit(backend.asarray(X))
        out = D.denoise(backend.asarray(Z), 0.5)
        ll = D.score_samples(backend.asarray(Z))
        sig = D.denoise(backend.asarray(Z), backend.asarray(np.array([0.1, 0.5, 1.0])))
    assert type(out) is type(backend.asarray(Z))
    np.testing.assert_allclose(backend.to_numpy(out), ref.denoise(Z, 0.5), atol=1e-10)
    np.testing.assert_allclose(backend.to_numpy(ll), ref.score_samples(Z), atol=1e-9)
    np.testing.assert_allclose(backend.to_numpy(sig)[1], ref.denoise(Z, 0.5)[1], atol=1e-10)


@pytest.mark.parametrize(
    "sigma, exc, match",
    [(0.0, ValueError, "sigma"), (-1.0, ValueError, "sigma"), (float("nan"), ValueError, "sigma"),
     ("a", TypeError, "sigma"), (np.array([1.0, 2.0]), ValueError, "shape"), (np.array([1.0, 0.0, 1.0]), ValueError, "> 0")],
)
def test_bad_sigma(sigma, exc, match, rng):
    D = GaussianDenoiser().fit(_data(rng))
    with pytest.raises(exc, match=match):
        D.denoise(rng.normal(size=(3, 5)), sigma)


def test_bad_input(rng):
    D = GaussianDenoiser().fit(_data(rng))
    with pytest.raises(ValueError, match="features"):
        D.denoise(rng.normal(size=(3, 4)), 1.0)
    with pytest.raises(ValueError, match="n_components"):
        GaussianDenoiser(n_components=9).fit(_data(rng))
    with pytest.raises(ValueError, match="scale"):
        tweedie(D, rng.normal(size=(2, 5)), 0.0, 1.0)
    with pytest.raises(ValueError, match="alpha_bar"):
        vp_sigma(0.0)
    torch = pytest.importorskip("torch")
    import array_api_compat.numpy as xp

    with pytest.raises(TypeError, match="namespace"):
        check_sigma(torch.ones(3), 3, xp, "cpu", xp.float64)


def test_wide_data_svd_path_matches_covariance_eigh(backend):
    """n < p with a low rank: the thin-SVD fit equals the covariance-eigh fit."""
    from sklearn import config_context

    rng = np.random.default_rng(11)
    X = rng.normal(size=(12, 40)) @ np.diag(np.linspace(3, 0.1, 40))
    with config_context(array_api_dispatch=True):
        D = GaussianDenoiser(n_components=5).fit(backend.asarray(X))
        Z = rng.normal(size=(3, 40))
        out = backend.to_numpy(D.denoise(backend.asarray(Z), 0.7))
    Xc = X - X.mean(axis=0)
    evals, evecs = np.linalg.eigh(Xc.T @ Xc / 11)
    evals, evecs = np.clip(evals[::-1], 0, None), evecs[:, ::-1]
    np.testing.assert_allclose(backend.to_numpy(D.explained_variance_), evals[:5] + 1e-6, rtol=1e-8)
    np.testing.assert_allclose(D.noise_variance_, evals[5:].mean() + 1e-6, rtol=1e-8)
    np.testing.assert_allclose(np.abs(backend.to_numpy(D.components_) @ evecs[:, :5]), np.eye(5), atol=1e-8)
    V = evecs[:, :5]
    lam, d2 = evals[:5] + 1e-6, evals[5:].mean() + 1e-6
    Zc = Z - X.mean(axis=0)
    want = X.mean(axis=0) + (Zc @ V) * (lam / (lam + 0.49)) @ V.T + d2 / (d2 + 0.49) * (Zc - Zc @ V @ V.T)
    np.testing.assert_allclose(out, want, atol=1e-8)
