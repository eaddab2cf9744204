"""DDS samplers and DDSReconstructor: the exact-posterior gold standard, DDS invariants, bad input."""

import math

import numpy as np
import pytest
from sklearn import config_context
from sklearn.exceptions import NotFittedError

from subspacelab import DDSReconstructor
from subspacelab.diffusion import (
    GaussianDenoiser,
    channels_to_complex,
    complex_to_channels,
    ddim_step,
    dds_data_consistency,
    dds_renoise,
    dds_sample,
    sampling_scales,
    vp_alpha_bar,
)
from subspacelab.operators import (
    Inpainting,
    MultiCoilMRI,
    ParallelBeamCT,
    birdcage_maps,
    sampling_mask,
    sparse_view_angles,
)
from tests._dense_operator import Dense


def isotropic_gaussian(mu, lam, asarray=np.asarray):
    """GaussianDenoiser of the exact prior N(mu, lam I)."""
    p = mu.shape[0]
    D = GaussianDenoiser()
    D.mean_ = asarray(mu)
    D.components_ = asarray(np.eye(1, p))
    D.explained_variance_ = asarray(np.array([lam]))
    D.noise_variance_ = float(lam)
    D.n_features_in_ = p
    return D


# ---------------------------------------------------------------- gold standard
@pytest.mark.parametrize("schedule", ["vp", "ve"])
def test_gold_standard_isotropic_gaussian_posterior_mean(backend, schedule):
    """Isotropic Gaussian prior, noiseless y, converged CG: the DDS mean is mu + A^+(y - A mu) (spec 6.4-11)."""
    rng = np.random.default_rng(0)
    p, m, B = 8, 3, 3000
    M = rng.normal(size=(m, p))
    mu = rng.normal(size=p) * 2.0
    lam = 0.5
    x_true = mu + math.sqrt(lam) * rng.normal(size=p)
    y = M @ x_true
    exact = mu + np.linalg.pinv(M) @ (y - M @ mu)
    xp, dev = backend.xp, backend.device
    A = Dense(backend.asarray(M), xp, dev)
    D = isotropic_gaussian(mu, lam, backend.asarray)
    Y = backend.asarray(np.tile(y, (B, 1)))
    with config_context(array_api_dispatch=True):
        est = DDSReconstructor(A, prior=D, n_steps=20, cg_iter=m + 2, eta=0.85, schedule=schedule, random_state=0)
        est.fit(backend.asarray(rng.normal(size=(4, p))))
        X = backend.to_numpy(est.predict(Y))
    assert est.denoiser_ is D  # a fitted prior is used as given
    # posterior covariance lam (I - A^+ A): standard error of the mean <= sqrt(lam / B) = 0.013
    np.testing.assert_allclose(X.mean(axis=0), exact, atol=0.06)
    assert np.abs(exact - mu).max() > 0.5 and np.abs(exact - np.linalg.pinv(M) @ y).max() > 0.5
    # every sample satisfies the data exactly (converged noiseless projection)
    np.testing.assert_allclose(X @ M.T, np.tile(y, (B, 1)), atol=1e-8)
    # under-dispersed: spread below the posterior spread, but nonzero
    post_var = lam * np.trace(np.eye(p) - np.linalg.pinv(M) @ M)
    spread = np.trace(np.cov(X.T))
    assert 0.1 * post_var < spread < post_var


def test_dds_renoising_is_underdispersed_ddim_is_not():
    """1-D N(0, 2) prior, no data (spec 1.3 table): DDS-eta 0.85 stays near 1.5, DDIM-eta 0.85 converges to 2."""
    D = isotropic_gaussian(np.zeros(1), 2.0)
    A = Inpainting(np.zeros(1))
    y = np.zeros((20000, 1))
    v_dds = dds_sample(D, A, y, n_steps=50, eta=0.85, renoise="dds", random_state=0).var()
    v_ode = dds_sample(D, A, y, n_steps=50, eta=0.0, random_state=0).var()
    assert abs(v_dds - 1.41) < 0.06
    assert abs(v_ode - 1.88) < 0.06
    v_dds = dds_sample(D, A, y, n_steps=250, eta=0.85, renoise="dds", random_state=0).var()
    v_ddim = dds_sample(D, A, y, n_steps=250, eta=0.85, renoise="ddim", random_state=0).var()
    assert abs(v_dds - 1.50) < 0.06  # inconsistent: does not approach 2
    assert abs(v_ddim - 2.0) < 0.08


# ---------------------------------------------------------------- steps and schedules
def test_ddim_step_matches_song_et_al_sigma():
    ab = vp_alpha_bar()
    t, tp = 600, 400
    a, s, a2, s2 = math.sqrt(ab[t]), math.sqrt(1 - ab[t]), math.sqrt(ab[tp]), math.sqrt(1 - ab[tp])
    eta = 0.7
    sig = eta * math.sqrt((1 - ab[tp]) / (1 - ab[t])) * math.sqrt(1 - ab[t] / ab[tp])
    x0, eps, z = np.array([1.0]), np.array([2.0]), np.array([-0.5])
    got = ddim_step(x0, eps, a2, s2, scale=a, noise=s, eta=eta, z=z)
    want = a2 * x0 + math.sqrt(1 - ab[tp] - sig**2) * eps + sig * z
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # the two conventions agree at eta = 0 and differ otherwise
    np.testing.assert_allclose(dds_renoise(x0, eps, a2, s2, eta=0.0), ddim_step(x0, eps, a2, s2, scale=a, noise=s))
    dds = dds_renoise(x0, eps, a2, s2, eta=eta, z=z)
    np.testing.assert_allclose(dds, a2 * x0 + s2 * (eta * z + math.sqrt(1 - eta**2) * eps))
    assert not np.allclose(dds, got)


def test_sampling_scales():
    a, s = sampling_scales(50, "vp")
    ab = vp_alpha_bar()
    assert a.shape == (51,) and a[-1] == 1.0 and s[-1] == 0.0
    np.testing.assert_allclose(a[0] ** 2, ab[980])  # DDS grid: 0, 20, ..., 980
    np.testing.assert_allclose(a[-2] ** 2, ab[0])
    np.testing.assert_allclose(a**2 + s**2, 1.0)
    a, s = sampling_scales(5, "ve", sigma_max=10.0, sigma_min=0.1)
    np.testing.assert_allclose(s, [10.0, 10 ** 0.5, 1.0, 10 ** -0.5, 0.1, 0.0])
    assert np.all(a == 1)


def test_eta_zero_is_deterministic_ddim():
    """eta = 0: the path depends only on x_init; the DDS and DDIM conventions coincide."""
    rng = np.random.default_rng(1)
    D = GaussianDenoiser(n_components=3).fit(rng.normal(size=(100, 6)) @ rng.normal(size=(6, 6)))
    A = Inpainting(np.array([1.0, 0, 0, 1, 0, 1]))
    y = A.forward(rng.normal(size=(4, 6)))
    x_init = rng.normal(size=(4, 6))
    outs = [dds_sample(D, A, y, n_steps=10, eta=0.0, renoise=r, x_init=x_init, random_state=seed)
            for r in ("dds", "ddim") for seed in (0, 1)]
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])
    noisy = dds_sample(D, A, y, n_steps=10, eta=0.5, x_init=x_init, random_state=0)
    assert not np.allclose(noisy, outs[0])


# ---------------------------------------------------------------- data consistency
def test_inpainting_is_hard_replacement():
    rng = np.random.default_rng(2)
    mask = (rng.random((5, 5)) < 0.4).astype(float)
    A = Inpainting(mask)
    x0, y = rng.normal(size=(3, 5, 5)), A.forward(rng.normal(size=(3, 5, 5)))
    one = dds_data_consistency(A, x0, y, n_iter=1)
    np.testing.assert_allclose(one, x0 + mask * (y - x0), atol=1e-12)
    np.testing.assert_allclose(dds_data_consistency(A, x0, y, n_iter=5), one, atol=1e-12)
    prox = dds_data_consistency(A, x0, y, n_iter=1, gamma=3.0)
    np.testing.assert_allclose(prox, (x0 + 3.0 * mask * y) / (1 + 3.0 * mask), atol=1e-12)
    np.testing.assert_array_equal(prox[:, mask == 0], x0[:, mask == 0])


def test_noiseless_cg_keeps_null_space_and_converges_to_projection():
    rng = np.random.default_rng(3)
    M = rng.normal(size=(4, 10))
    A = Dense(M)
    x0, y = rng.normal(size=(2, 10)), rng.normal(size=(2, 4))
    P = np.linalg.pinv(M)
    null = np.eye(10) - P @ M
    for k in (1, 2, 3):
        xk = dds_data_consistency(A, x0, y, n_iter=k)
        np.testing.assert_allclose((xk - x0) @ null.T, 0, atol=1e-12)
    x4 = dds_data_consistency(A, x0, y, n_iter=4)
    np.testing.assert_allclose(x4, x0 + (y - x0 @ M.T) @ P.T, atol=1e-9)


def test_complex_proximal_branch_is_exact_no_one_plus_i():
    """Complex MRI: (I + g A^H A) x = x0 + g A^H y solved exactly (the reference mixes in (1+i); spec 2.7-3)."""
    rng = np.random.default_rng(4)
    n = 6
    mask = sampling_mask((n, n), "equispaced", acceleration=2, center_fraction=0.3, random_state=0).mask
    A = MultiCoilMRI(mask, birdcage_maps((n, n), n_coils=3))
    x0 = rng.normal(size=(2, n, n)) + 1j * rng.normal(size=(2, n, n))
    y = A.forward(rng.normal(size=(2, n, n)) + 1j * rng.normal(size=(2, n, n)))
    g = 0.7
    got = dds_data_consistency(A, x0, y, n_iter=n * n, gamma=g)
    E = np.eye(n * n).reshape(n * n, n, n)
    Amat = A.forward(E.astype(complex)).reshape(n * n, -1).T  # columns = A e_j
    H = np.eye(n * n) + g * Amat.conj().T @ Amat
    want = np.linalg.solve(H, (x0.reshape(2, -1) + g * A.adjoint(y).reshape(2, -1)).T).T.reshape(2, n, n)
    assert np.iscomplexobj(got)
    np.testing.assert_allclose(got, want, atol=1e-9)
    wrong = np.linalg.solve(H, (x0.reshape(2, -1) + g * (1 + 1j) * A.adjoint(y).reshape(2, -1)).T).T
    assert np.abs(wrong.reshape(2, n, n) - got).max() > 0.1


def test_channel_pair_round_trips():
    rng = np.random.default_rng(5)
    z = rng.normal(size=(3, 4, 5)) + 1j * rng.normal(size=(3, 4, 5))
    ch = complex_to_channels(z)
    assert ch.shape == (3, 2, 4, 5) and ch.dtype == np.float64
    np.testing.assert_array_equal(channels_to_complex(ch), z)
    assert channels_to_complex(complex_to_channels(z.astype(np.complex64))).dtype == np.complex64
    with pytest.raises(TypeError, match="complex"):
        complex_to_channels(z.real)
    with pytest.raises(ValueError, match="shape"):
        channels_to_complex(np.zeros((3, 3, 4)))


# ---------------------------------------------------------------- estimator behaviour
def _mri_problem(n=16, n_train=40, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n] / n
    imgs = np.stack([np.clip(0.5 + 0.3 * np.sin(2 * np.pi * (f * xx + g * yy)) * (1 - xx), 0, 1)
                     for f, g in rng.uniform(0.2, 1.5, size=(n_train + 2, 2))])
    return imgs[:n_train], imgs[n_train:]


def test_full_mask_returns_measured_image():
    X, Xt = _mri_problem()
    n = X.shape[1]
    A = MultiCoilMRI(np.ones((n, n)), birdcage_maps((n, n), n_coils=4))
    est = DDSReconstructor(A, prior="gaussian", n_steps=5, cg_iter=1, random_state=0).fit(X)
    out = est.predict(A.forward(Xt))
    assert out.shape == Xt.shape and out.dtype == np.float64
    np.testing.assert_allclose(out, Xt, atol=1e-10)
    assert est.score(A.forward(Xt), Xt) > 150


def test_complex_images_stay_complex():
    X, Xt = _mri_problem()
    n = X.shape[1]
    phase = np.exp(1j * np.linspace(0, 1, n))[None, None, :]
    mask = sampling_mask((n, n), "equispaced", acceleration=2, center_fraction=0.25, random_state=0).mask
    A = MultiCoilMRI(mask, birdcage_maps((n, n), n_coils=4))
    est = DDSReconstructor(A, prior="gaussian", n_steps=6, noise_std=0.01, random_state=0).fit(X * phase)
    assert est.complex_images_ and est.denoiser_.n_features_in_ == 2 * n * n
    out = est.predict(A.forward(Xt * phase))
    assert np.iscomplexobj(out) and out.shape == Xt.shape
    assert est.score(A.forward(Xt * phase), Xt * phase) > 20
    # flattened measurements give flattened images
    flat = est.predict(A.forward(Xt * phase).reshape(2, -1))
    np.testing.assert_allclose(flat, out.reshape(2, -1))


def test_mri_reconstruction_beats_zero_filled():
    X, Xt = _mri_problem(n_train=60)
    n = X.shape[1]
    mask = sampling_mask((n, n), "equispaced", acceleration=4, center_fraction=0.1, random_state=0).mask
    A = MultiCoilMRI(mask, birdcage_maps((n, n), n_coils=2))
    y = A.forward(Xt)
    est = DDSReconstructor(A, prior="gaussian", n_steps=20, random_state=0).fit(X)
    from subspacelab.metrics import psnr

    zf = float(np.mean(psnr(Xt, np.real(A.adjoint(y)), data_range=1.0)))
    assert est.score(y, Xt) > zf + 5


def test_ct_molrg_prior_runs():
    X, Xt = _mri_problem(n=12)
    A = ParallelBeamCT((12, 12), sparse_view_angles(6))
    est = DDSReconstructor(A, n_steps=8, random_state=0).fit(X)
    out = est.predict(A.forward(Xt))
    assert out.shape == Xt.shape
    assert np.linalg.norm(A.forward(out) - A.forward(Xt)) < 0.2 * np.linalg.norm(A.forward(Xt))


def test_determinism_across_backends(backend):
    rng = np.random.default_rng(6)
    X = rng.normal(size=(50, 6)) @ rng.normal(size=(6, 6))
    mask = np.array([1.0, 0, 1, 0, 0, 1])
    Y = Inpainting(mask).forward(X[:5])
    ref = DDSReconstructor(Inpainting(mask), prior="gaussian", n_steps=8, random_state=3).fit(X).predict(Y)
    with config_context(array_api_dispatch=True):
        est = DDSReconstructor(Inpainting(backend.asarray(mask)), prior="gaussian", n_steps=8, random_state=3)
        est.fit(backend.asarray(X))
        a, b = est.predict(backend.asarray(Y)), est.predict(backend.asarray(Y))
    assert type(a) is type(backend.asarray(Y))
    np.testing.assert_array_equal(backend.to_numpy(a), backend.to_numpy(b))
    np.testing.assert_allclose(backend.to_numpy(a), ref, atol=1e-8)
    other = DDSReconstructor(Inpainting(mask), prior="gaussian", n_steps=8, random_state=4).fit(X).predict(Y)
    assert not np.allclose(other, ref)


# ---------------------------------------------------------------- bad input
def test_bad_input():
    X, Xt = _mri_problem(n=8, n_train=10)
    A = MultiCoilMRI(np.ones((8, 8)), birdcage_maps((8, 8), n_coils=2))
    est = DDSReconstructor(A, prior="gaussian", n_steps=2)
    with pytest.raises(NotFittedError):
        est.predict(A.forward(Xt))
    est.fit(X)
    with pytest.raises(ValueError, match="expected"):
        est.predict(np.zeros((2, 3, 8, 8)))
    with pytest.raises(ValueError, match="NaN"):
        est.predict(np.full((2, 2, 8, 8), np.nan))
    with pytest.raises(ValueError, match="expected"):
        DDSReconstructor(A, prior="gaussian").fit(np.zeros((5, 7, 7)))
    with pytest.raises(ValueError, match="n_steps"):
        DDSReconstructor(A, n_steps=0).fit(X)
    with pytest.raises(ValueError, match="eta"):
        DDSReconstructor(A, eta=1.5).fit(X)
    with pytest.raises(ValueError, match="prior"):
        DDSReconstructor(A, prior="diffusion").fit(X)
    with pytest.raises(TypeError, match="prior"):
        DDSReconstructor(A, prior=3).fit(X)
    with pytest.raises(TypeError, match="operator"):
        DDSReconstructor(np.eye(3)).fit(X)
    with pytest.raises(ValueError, match="noise_std"):
        DDSReconstructor(A, noise_std=-1.0).fit(X)
    ct = ParallelBeamCT((8, 8), sparse_view_angles(4))
    with pytest.raises(TypeError, match="complex"):
        DDSReconstructor(ct, prior="gaussian").fit(X + 1j)
    D = isotropic_gaussian(np.zeros(5), 1.0)
    with pytest.raises(ValueError, match="prior expects 5"):
        DDSReconstructor(A, prior=D).fit(X)
    with pytest.raises(ValueError, match="y must have shape"):
        dds_sample(D, Inpainting(np.ones(5)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="z"):
        dds_renoise(np.ones(2), np.ones(2), 0.5, 0.5, eta=0.5)


@pytest.mark.data
def test_demo_row_beats_cg_sense():
    from subspacelab.datasets import DataNotAvailableError
    from subspacelab.estimators.dds import demo_row

    try:
        row = demo_row()
    except DataNotAvailableError as exc:
        pytest.skip(str(exc))
    assert row["value"] > row["baseline_value"] + 3


# ---------------------------------------------------------------- 3-D variant (ADMM-TV along z)
def test_diff_z_adjoint(backend):
    from subspacelab.diffusion import diff_z, diff_z_adjoint

    rng = np.random.default_rng(7)
    x, v = rng.normal(size=(5, 3, 4)), rng.normal(size=(5, 3, 4))
    Dx = backend.to_numpy(diff_z(backend.asarray(x), backend.xp))
    Dtv = backend.to_numpy(diff_z_adjoint(backend.asarray(v), backend.xp))
    np.testing.assert_allclose(Dx[0], x[1] - x[0])
    np.testing.assert_allclose(Dx[-1], x[0] - x[-1])
    np.testing.assert_allclose(np.sum(Dx * v), np.sum(x * Dtv), rtol=1e-12)


def _volume_problem():
    rng = np.random.default_rng(8)
    X, _ = _mri_problem(n=10, n_train=30)
    D = GaussianDenoiser(n_components=5).fit(X.reshape(30, -1))
    base = X[0]
    vol = np.stack([base * (1 + 0.02 * k) for k in range(6)])  # smooth along z
    A = ParallelBeamCT((10, 10), sparse_view_angles(4))
    return D, A, vol, A.forward(vol), rng


def test_tv_z_admm_step_is_exact_and_warm_started():
    """Two ADMM-TV-z steps with converged CG against dense solves; (d, u) carried between steps."""
    from subspacelab.diffusion.samplers import _TVzADMM

    rng = np.random.default_rng(9)
    Z, p, rho, lam = 3, 4, 2.0, 0.3
    # one weakly observed direction (the z-coupling matters there); H stays positive definite
    M = np.vstack([0.5 * rng.normal(size=(3, p)), 0.05 * rng.normal(size=(1, p))])
    A = Dense(M)
    y = rng.normal(size=(Z, 4))
    Aty = y @ M
    Dz = np.roll(np.eye(Z), 1, axis=1) - np.eye(Z)  # (Dz x)_k = x_{k+1} - x_k, circular
    H = np.kron(np.eye(Z), M.T @ M) + rho * np.kron(Dz.T @ Dz, np.eye(p))
    import array_api_compat.numpy as xnp

    admm = _TVzADMM(A, Aty, np.zeros((Z, p)), rho, lam, Z * p, False, xnp)
    d, u = np.zeros((Z, p)), np.zeros((Z, p))
    for _ in range(2):
        x0 = rng.normal(size=(Z, p))
        got = admm.step(x0)
        want = np.linalg.solve(H, (Aty + rho * (Dz.T @ (d - u))).ravel()).reshape(Z, p)
        np.testing.assert_allclose(got, want, atol=1e-8)
        v = Dz @ want + u
        d = np.sign(v) * np.maximum(np.abs(v) - lam / rho, 0)
        u = v - d
        np.testing.assert_allclose(admm.d, d, atol=1e-8)
        np.testing.assert_allclose(admm.u, u, atol=1e-8)


def test_tv_z_admm_couples_slices_and_improves_z_smooth_volume():
    D, A, vol, y, _ = _volume_problem()
    two_d = dds_sample(D, A, y, n_steps=10, random_state=0)
    three_d = dds_sample(D, A, y, n_steps=10, tv_z=(10.0, 0.4), random_state=0)
    tv = lambda v: np.abs(np.diff(v, axis=0)).sum()
    assert tv(three_d) < 0.8 * tv(two_d)
    assert np.linalg.norm(three_d - vol) < np.linalg.norm(two_d - vol)
    with pytest.raises(ValueError, match="exclude"):
        dds_sample(D, A, y, gamma=1.0, tv_z=(10.0, 0.4))
    with pytest.raises(TypeError, match="pair"):
        dds_sample(D, A, y, tv_z=10.0)


def test_unet_prior_instance_is_cloned_and_trained():
    pytest.importorskip("torch")
    from subspacelab.diffusion import TorchDenoiser

    X, Xt = _mri_problem(n=8, n_train=16)
    A = Inpainting((np.random.default_rng(10).random((8, 8)) < 0.5).astype(float))
    unet = TorchDenoiser(image_shape=(8, 8), base_channels=4, channel_mult=(1,), max_steps=2, batch_size=8,
                         n_threads=1, random_state=0)
    est = DDSReconstructor(A, prior=unet, n_steps=3, random_state=0).fit(X)
    assert est.denoiser_ is not unet and hasattr(est.denoiser_, "network_")
    out = est.predict(A.forward(Xt))
    assert out.shape == Xt.shape
    np.testing.assert_allclose(A.forward(out), A.forward(Xt), atol=1e-10)  # hard replacement
