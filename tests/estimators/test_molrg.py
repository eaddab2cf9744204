"""MoLRGDenoiser: exact posterior mean, spec 4.7 invariants, K-subspaces recovery, phase
transition (specs/rate_reduction.md section 4, diffusion_flow.md sections 6.2 and 8.8)."""

import warnings

import numpy as np
import pytest
from sklearn import config_context
from sklearn.exceptions import ConvergenceWarning

from subspacelab import MoLRGDenoiser
from subspacelab.datasets import make_mixture_of_low_rank_gaussians


def _subspace_error(U_true, U_est):
    """min over permutations of max_k ||P_k - P*_k||_F / sqrt(2 d) (spec 4.4)."""
    from itertools import permutations

    K = len(U_true)
    best = np.inf
    for perm in permutations(range(K)):
        err = max(np.linalg.norm(U_true[k] @ U_true[k].T - U_est[p] @ U_est[p].T) / np.sqrt(2 * U_true[k].shape[1])
                  for k, p in enumerate(perm))
        best = min(best, err)
    return best


def _fitted_bases(m):
    return [np.asarray(m.subspaces_[k, :, :d]) for k, d in enumerate(m.subspace_dims_)]


def _random_model(rng, n=6, dims=(2, 3), weights=(0.3, 0.7), variances=None, noise=0.0):
    bases = [np.linalg.qr(rng.normal(size=(n, d)))[0] for d in dims]
    variances = variances or [np.linspace(0.5, 2.0, d) for d in dims]
    return MoLRGDenoiser.from_subspaces(bases, weights=np.array(weights), variances=variances, noise_variance=noise), bases


def test_posterior_mean_matches_monte_carlo(rng):
    model, bases = _random_model(rng)
    n_mc = 400_000
    comp = rng.choice(2, size=n_mc, p=[0.3, 0.7])
    x0 = np.zeros((n_mc, 6))
    for k, U in enumerate(bases):
        idx = comp == k
        lam = np.asarray(model.variances_[k, : U.shape[1]])
        x0[idx] = (rng.normal(size=(idx.sum(), U.shape[1])) * np.sqrt(lam)) @ U.T
    sigma = 0.7
    z = model.sample(1, random_state=1) + sigma * rng.normal(size=(1, 6))
    logw = -np.sum((z - x0) ** 2, axis=1) / (2 * sigma**2)
    w = np.exp(logw - logw.max())
    mc = (w[:, None] * x0).sum(0) / w.sum()
    got = model.denoise(z, sigma)[0]
    assert np.linalg.norm(got - mc) / np.linalg.norm(mc) < 2e-2
    # the posterior weight of component 0 too
    mc_w0 = w[comp == 0].sum() / w.sum()
    assert abs(model.posterior_weights(z, sigma)[0, 0] - mc_w0) < 2e-2


def test_tiny_worked_examples():
    e1, e2 = np.array([[1.0], [0.0]]), np.array([[0.0], [1.0]])
    m = MoLRGDenoiser.from_subspaces([e1])
    np.testing.assert_allclose(m.denoise(np.array([[2.0, 3.0]]), 1.0), [[1.0, 0.0]], atol=1e-12)
    m2 = MoLRGDenoiser.from_subspaces([e1, e2])
    w1 = np.e / (np.e + 1)
    np.testing.assert_allclose(m2.posterior_weights(np.array([[2.0, 0.0]]), 1.0)[0, 0], w1, rtol=1e-12)
    np.testing.assert_allclose(m2.denoise(np.array([[2.0, 0.0]]), 1.0), [[w1, 0.0]], rtol=1e-12)


def test_paper_form_for_unit_equal_dims(rng):
    n, d, K = 8, 2, 3
    Q = np.linalg.qr(rng.normal(size=(n, n)))[0]
    bases = [Q[:, k * d : (k + 1) * d] for k in range(K)]
    m = MoLRGDenoiser.from_subspaces(bases)
    z = rng.normal(size=(5, n))
    for s in (0.3, 1.0, 2.0):
        logits = np.stack([np.sum((z @ U) ** 2, 1) / (2 * s**2 * (1 + s**2)) for U in bases])
        w = np.exp(logits - logits.max(0))
        w /= w.sum(0)
        expected = sum(w[k][:, None] * (z @ U @ U.T) for k, U in enumerate(bases)) / (1 + s**2)
        np.testing.assert_allclose(m.denoise(z, s), expected, atol=1e-12)


def test_score_is_gradient_of_log_density(rng):
    model, _ = _random_model(rng, noise=0.05)
    z = rng.normal(size=(1, 6))
    sigma, h = 0.5, 1e-5
    fd = np.array([(model.score_samples(z + h * e, sigma) - model.score_samples(z - h * e, sigma))[0] / (2 * h)
                   for e in np.eye(6)])
    np.testing.assert_allclose(model.score_function(z, sigma)[0], fd, rtol=1e-6, atol=1e-8)


def test_jacobian_is_symmetric(rng):
    model, _ = _random_model(rng, noise=0.01)
    z = rng.normal(size=(1, 6))
    h = 1e-6
    J = np.stack([(model.denoise(z + h * e, 0.6) - model.denoise(z - h * e, 0.6))[0] / (2 * h) for e in np.eye(6)], 1)
    np.testing.assert_allclose(J, J.T, atol=1e-6)


def test_invariances_and_limits(rng):
    model, bases = _random_model(rng, dims=(2, 2), weights=(0.5, 0.5), variances=[np.ones(2), np.ones(2)])
    z = rng.normal(size=(4, 6))
    Q = np.linalg.qr(rng.normal(size=(6, 6)))[0]
    rot = MoLRGDenoiser.from_subspaces([Q @ U for U in bases], weights=np.array([0.5, 0.5]))
    np.testing.assert_allclose(rot.denoise(z @ Q.T, 0.8), model.denoise(z, 0.8) @ Q.T, atol=1e-12)
    O = np.linalg.qr(rng.normal(size=(2, 2)))[0]
    rb = MoLRGDenoiser.from_subspaces([U @ O for U in bases], weights=np.array([0.5, 0.5]))
    np.testing.assert_allclose(rb.denoise(z, 0.8), model.denoise(z, 0.8), atol=1e-12)
    w = model.posterior_weights(z, 0.8)
    assert np.all(w >= 0) and np.allclose(w.sum(1), 1)
    np.testing.assert_allclose(model.denoise(z, 1e5), 0, atol=1e-8)
    near = np.argmax([np.sum((z @ U) ** 2, 1) for U in bases], axis=0)
    proj = np.stack([z[i] @ bases[k] @ bases[k].T for i, k in enumerate(near)])
    np.testing.assert_allclose(model.denoise(z, 1e-4), proj, atol=1e-6)
    K1 = MoLRGDenoiser.from_subspaces([bases[0]])
    np.testing.assert_allclose(K1.denoise(z, 0.5), z @ bases[0] @ bases[0].T / 1.25, atol=1e-12)


def test_k1_fit_is_pca(rng):
    X = rng.normal(size=(200, 7)) @ rng.normal(size=(7, 7))
    m = MoLRGDenoiser(n_components=1, subspace_dim=3, random_state=0).fit(X)
    top = np.linalg.svd(X, full_matrices=False)[2][:3].T
    assert _subspace_error([top], _fitted_bases(m)) < 1e-10
    mc = MoLRGDenoiser(n_components=1, subspace_dim=3, center=True, random_state=0).fit(X)
    from sklearn.decomposition import PCA

    assert _subspace_error([PCA(3).fit(X).components_.T], _fitted_bases(mc)) < 1e-10
    np.testing.assert_allclose(mc.means_[0], X.mean(0), atol=1e-12)


@pytest.mark.parametrize("dims", [(3, 3, 3), (2, 4, 3)])
def test_exact_recovery_of_separated_mixture(dims, rng):
    X, y, bases = make_mixture_of_low_rank_gaussians(60 * len(dims), 16, len(dims), list(dims), orthogonal=False,
                                                     random_state=1)
    m = MoLRGDenoiser(n_components=len(dims), subspace_dim=list(dims), n_init=5, random_state=0).fit(X)
    order = [int(np.bincount(m.labels_[y == k]).argmax()) for k in range(len(dims))]
    assert sorted(order) == list(range(len(dims)))
    for k, U in enumerate(bases):
        est = np.asarray(m.subspaces_[order[k], :, : dims[k]])
        assert np.linalg.norm(U @ U.T - est @ est.T) < 1e-8
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(y, m.labels_) == 1.0
    assert m.inertia_ < 1e-20
    np.testing.assert_allclose(m.weights_, np.bincount(y) / len(y))
    np.testing.assert_array_equal(m.predict(X), m.labels_)
    assert m.transform(X).shape == (len(y), sum(dims))


def test_inertia_decreases_with_iterations(rng):
    X = rng.normal(size=(120, 6))
    vals = [MoLRGDenoiser(3, 2, n_init=1, max_iter=it, random_state=4).fit(X).inertia_ for it in range(1, 6)
            if not warnings.simplefilter("ignore", ConvergenceWarning)]
    assert all(b <= a + 1e-12 for a, b in zip(vals, vals[1:]))


def test_convergence_warning(rng):
    X = rng.normal(size=(200, 6))
    with pytest.warns(ConvergenceWarning, match="max_iter"):
        MoLRGDenoiser(4, 2, n_init=1, max_iter=1, random_state=0).fit(X)


def test_sample_lies_on_subspaces_with_weights(rng):
    X, y, bases = make_mixture_of_low_rank_gaussians([300, 100], 10, 2, 2, random_state=0)
    m = MoLRGDenoiser(2, 2, random_state=0).fit(X)
    S = m.sample(400, n_steps=30, random_state=0)
    res = np.min([np.sum((S - S @ U @ U.T) ** 2, 1) for U in bases], axis=0)
    assert np.quantile(res / np.sum(S**2, 1), 0.95) < 1e-3
    frac = np.mean(m.predict(S) == np.argmax(m.weights_))
    assert abs(frac - 0.75) < 0.07
    sd = np.sqrt(np.mean(S**2))
    assert 0.5 < sd / np.sqrt(np.mean(X**2)) < 1.5


def test_every_backend_matches_numpy(backend, rng):
    X, _, _ = make_mixture_of_low_rank_gaussians(60, 8, 2, 2, random_state=0)
    Z = X[:5] + 0.1 * rng.normal(size=(5, 8))
    ref = MoLRGDenoiser(2, 2, n_init=3, random_state=0).fit(X)
    with config_context(array_api_dispatch=True):
        m = MoLRGDenoiser(2, 2, n_init=3, random_state=0).fit(backend.asarray(X))
        out = m.denoise(backend.asarray(Z), 0.1)
        lab = m.predict(backend.asarray(Z))
        ll = m.score_samples(backend.asarray(Z), 0.2)
    assert type(out) is type(backend.asarray(Z))
    np.testing.assert_allclose(backend.to_numpy(out), ref.denoise(Z, 0.1), atol=1e-8)
    np.testing.assert_array_equal(backend.to_numpy(lab), ref.predict(Z))
    np.testing.assert_allclose(backend.to_numpy(ll), ref.score_samples(Z, 0.2), rtol=1e-9)


def test_float32_preserved(rng):
    X, _, _ = make_mixture_of_low_rank_gaussians(60, 8, 2, 2, random_state=0)
    m = MoLRGDenoiser(2, 2, n_init=2, random_state=0).fit(X.astype(np.float32))
    out = m.denoise(X[:3].astype(np.float32), 0.1)
    assert out.dtype == np.float32 and np.all(np.isfinite(out))


def test_bad_input(rng):
    X = rng.normal(size=(20, 4))
    with pytest.raises(ValueError, match="subspace_dim"):
        MoLRGDenoiser(2, 5).fit(X)
    with pytest.raises(ValueError, match="entries"):
        MoLRGDenoiser(2, [1, 2, 3]).fit(X)
    with pytest.raises(ValueError, match="n_samples=1"):
        MoLRGDenoiser(2, 1).fit(X[:1])
    with pytest.raises(ValueError, match="latent_variance"):
        MoLRGDenoiser(latent_variance="x").fit(X)
    m = MoLRGDenoiser(2, 1, n_init=1, random_state=0).fit(X)
    with pytest.raises(ValueError, match="sigma"):
        m.denoise(X, 0.0)
    with pytest.raises(ValueError, match="features"):
        m.denoise(X[:, :3], 1.0)
    with pytest.raises(ValueError, match="orthonormal"):
        MoLRGDenoiser.from_subspaces([np.ones((3, 1))])
    with pytest.raises(ValueError, match="weights"):
        MoLRGDenoiser.from_subspaces([np.eye(3)[:, :1]], weights=np.array([0.5]))
    with pytest.raises(ValueError, match="noise_variance"):
        MoLRGDenoiser.from_subspaces([np.eye(3)[:, :1]]).score_samples(X[:, :3])


def _success_rate(K, d, n_per, seeds, D=48):
    ok = 0
    for seed in seeds:
        X, _, bases = make_mixture_of_low_rank_gaussians([n_per] * K, D, K, d, random_state=seed)
        m = MoLRGDenoiser(K, d, n_init=10, random_state=seed).fit(X)
        ok += _subspace_error(bases, _fitted_bases(m)) < 0.1
    return ok / len(seeds)


def test_k1_sample_complexity_is_exactly_d():
    for d in (3, 6):
        assert _success_rate(1, d, d - 1, range(3)) == 0.0
        assert _success_rate(1, d, d, range(3)) == 1.0


@pytest.mark.slow
def test_phase_transition_at_nk_about_dk():
    """Spec 4.4: recovery fails below N_k = d_k and succeeds a little above it (K = 2, D = 48)."""
    for d in (4, 8):
        assert _success_rate(2, d, d - 1, range(5)) == 0.0
        assert _success_rate(2, d, 2 * d, range(5)) >= 0.8


# ---------------------------------------------------------------- solver="denoising" (torch)
def _torch():
    return pytest.importorskip("torch")


def test_denoising_solver_k1_is_pca(rng):
    """Spec 4.2: for K = 1 the denoising loss is minimised by the top-d principal subspace."""
    _torch()
    U = np.linalg.qr(rng.normal(size=(10, 3)))[0]
    X = rng.normal(size=(300, 3)) * [3.0, 2.0, 1.5] @ U.T + 0.05 * rng.normal(size=(300, 10))
    m = MoLRGDenoiser(1, 3, solver="denoising", n_init=1, max_iter=300, random_state=0).fit(X)
    top = np.linalg.svd(X, full_matrices=False)[2][:3].T
    assert _subspace_error([top], _fitted_bases(m)) < 0.05
    # the loss goes down
    curve = np.asarray(m.loss_curve_)
    assert len(curve) == m.n_iter_ == 300
    assert curve[-30:].mean() < 0.8 * curve[:30].mean()


def test_denoising_solver_recovers_separated_mixture():
    _torch()
    X, y, bases = make_mixture_of_low_rank_gaussians(3 * 24, 48, 3, 8, random_state=1)
    m = MoLRGDenoiser(3, 8, solver="denoising", n_init=2, max_iter=300, random_state=0).fit(X)
    assert _subspace_error(bases, _fitted_bases(m)) < 0.05
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(y, m.labels_) == 1.0
    np.testing.assert_allclose(m.weights_, np.bincount(y) / len(y))
    # the fitted model is a proper MoLRG: its exact denoiser is close to the truth's
    truth = MoLRGDenoiser.from_subspaces(bases, variances=[np.full(8, np.mean(m.variances_))] * 3,
                                         noise_variance=m.noise_variance_)
    Z = X[:10] + 0.1 * np.random.default_rng(0).normal(size=(10, 48))
    assert np.abs(m.denoise(Z, 0.1) - truth.denoise(Z, 0.1)).max() < 0.1 * np.abs(Z).max()


def test_denoising_solver_reproducible_and_backends(backend):
    _torch()
    X, _, _ = make_mixture_of_low_rank_gaussians(40, 8, 2, 2, random_state=0)
    kw = dict(solver="denoising", n_init=2, max_iter=40, random_state=3)
    ref = MoLRGDenoiser(2, 2, **kw).fit(X)
    np.testing.assert_array_equal(MoLRGDenoiser(2, 2, **kw).fit(X).subspaces_, ref.subspaces_)
    with config_context(array_api_dispatch=True):
        m = MoLRGDenoiser(2, 2, **kw).fit(backend.asarray(X))
    assert type(m.subspaces_) is type(backend.asarray(X))
    np.testing.assert_allclose(backend.to_numpy(m.subspaces_), ref.subspaces_, atol=1e-10)
    np.testing.assert_array_equal(backend.to_numpy(m.labels_), ref.labels_)


def test_denoising_solver_bad_input(rng):
    X = rng.normal(size=(20, 4))
    with pytest.raises(ValueError, match="solver"):
        MoLRGDenoiser(solver="sgd").fit(X)
    with pytest.raises(ValueError, match="center=False"):
        MoLRGDenoiser(solver="denoising", center=True).fit(X)
    with pytest.raises(ValueError, match="learning_rate"):
        MoLRGDenoiser(solver="denoising", learning_rate=0.0).fit(X)
    with pytest.raises(ValueError, match="batch_size"):
        MoLRGDenoiser(solver="denoising", batch_size=0).fit(X)
    with pytest.raises(ValueError, match="all-zero"):
        MoLRGDenoiser(1, 1, solver="denoising").fit(np.zeros((5, 4)))


@pytest.mark.slow
def test_denoising_solver_phase_transition():
    """The denoising-loss fit, too, fails below N_k = d_k and succeeds a few d_k above it."""
    _torch()

    def rate(n_per, seeds):
        ok = 0
        for seed in seeds:
            X, _, bases = make_mixture_of_low_rank_gaussians([n_per] * 2, 48, 2, 4, random_state=seed)
            m = MoLRGDenoiser(2, 4, solver="denoising", n_init=3, max_iter=300, random_state=seed).fit(X)
            ok += _subspace_error(bases, _fitted_bases(m)) < 0.1
        return ok / len(seeds)

    assert rate(3, range(3)) == 0.0
    assert rate(12, range(3)) >= 2 / 3
