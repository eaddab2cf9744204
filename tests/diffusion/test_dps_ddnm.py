"""DPS for any linear operator (gradient through the denoiser) and DDNM range-null sampling (exact A^+ = A^H)."""

import array_api_compat.numpy
import numpy as np
import pytest
from sklearn import config_context

from subspacelab import MoLRGDenoiser
from subspacelab.diffusion import GaussianDenoiser, dds_sample
from subspacelab.diffusion.baselines import ddnm_sample, dps_sample
from subspacelab.diffusion.copaint import _prior, _x0, _x0_and_vjp, _x0_then_vjp
from subspacelab.operators import (
    Inpainting,
    MultiCoilMRI,
    ParallelBeamCT,
    birdcage_maps,
    sampling_mask,
    sparse_view_angles,
)


def _images(rng, n=300, size=8, rank=3):
    """Smooth low-rank random images (n, size, size)."""
    t = np.linspace(0, 1, size)
    basis = np.stack([np.outer(np.sin((i + 1) * np.pi * t), np.cos(j * np.pi * t)) for i in range(rank) for j in range(2)])
    coef = rng.normal(size=(n, basis.shape[0]))
    return 0.5 + 0.2 * np.tensordot(coef, basis, axes=1) / rank


def _mri(size=8, coils=2, R=2):
    mask = sampling_mask((size, size), "equispaced", acceleration=R, center_fraction=0.25, random_state=0).mask
    return MultiCoilMRI(mask, birdcage_maps((size, size), n_coils=coils)) if coils > 1 else MultiCoilMRI(mask)


@pytest.mark.parametrize("kind", ["gaussian", "molrg"])
def test_dps_gradient_matches_finite_differences(kind, rng):
    """The DPS guidance, the VJP of ||y - A x0_hat(x)|| through the denoiser, equals a finite-difference
    directional derivative (closed-form posterior-covariance VJP: J = (a / s^2) Cov[x0 | x_t])."""
    X = _images(rng).reshape(300, -1)
    D = GaussianDenoiser(n_components=6).fit(X) if kind == "gaussian" else \
        MoLRGDenoiser(n_components=2, subspace_dim=3, center=True, n_init=2, random_state=0).fit(X)
    prior = _prior(D, array_api_compat.numpy, "cpu", np.float64)
    A = _mri()
    y = A.forward(X[:3].reshape(3, 8, 8))
    x, v = rng.normal(size=(3, 64)), rng.normal(size=(3, 64))

    def phi(z, a, s):  # ||y - A x0_hat(z)|| per image
        r = y - A.forward(_x0(prior, z, a, s).reshape(3, 8, 8))
        return np.sqrt(np.sum(np.abs(r) ** 2, axis=(1, 2, 3)))

    def grad_norm(x0):
        r = y - A.forward(x0.reshape(3, 8, 8))
        n = np.sqrt(np.sum(np.abs(r) ** 2, axis=(1, 2, 3)))
        return (-np.real(A.adjoint(r)) / n[:, None, None]).reshape(3, 64)

    for a, s in [(0.3, 0.95), (0.8, 0.6), (0.99, 0.14)]:
        x0, grad = _x0_then_vjp(prior, x, a, s, grad_norm)
        np.testing.assert_allclose(x0, _x0(prior, x, a, s), rtol=1e-12)
        np.testing.assert_allclose(grad, _x0_and_vjp(prior, x, a, s, grad_norm(x0))[1], rtol=1e-12, atol=1e-14)
        h = 1e-6
        fd = (phi(x + h * v, a, s) - phi(x - h * v, a, s)) / (2 * h)
        np.testing.assert_allclose(np.sum(grad * v, axis=1), fd, rtol=1e-5, atol=1e-8)


def test_dps_torch_gradient_is_one_forward_and_matches_finite_differences(rng):
    pytest.importorskip("torch")
    from subspacelab.diffusion import TorchDenoiser

    X = _images(rng, n=32)
    D = TorchDenoiser(base_channels=4, channel_mult=(1,), max_steps=3, batch_size=8, n_threads=1, random_state=0).fit(X)
    prior = _prior(D, array_api_compat.numpy, "cpu", np.float64)
    x, g, v = rng.normal(size=(2, 64)), rng.normal(size=(2, 64)), rng.normal(size=(2, 64))
    calls = []

    def g_of(x0):
        calls.append(x0)
        return g

    x0, grad = _x0_then_vjp(prior, x, 0.8, 0.6, g_of)
    assert len(calls) == 1
    np.testing.assert_allclose(x0, _x0(prior, x, 0.8, 0.6), rtol=1e-5, atol=1e-6)
    h = 1e-2
    jv = (_x0(prior, x + h * v, 0.8, 0.6) - _x0(prior, x - h * v, 0.8, 0.6)) / (2 * h)
    np.testing.assert_allclose(np.sum(grad * v, axis=1), np.sum(g * jv, axis=1), rtol=2e-2, atol=1e-3)


@pytest.mark.parametrize("problem", ["mri", "ct"])
def test_dps_lowers_the_data_residual(problem, rng):
    X = _images(rng)
    D = MoLRGDenoiser(n_components=2, subspace_dim=4, center=True, n_init=2, random_state=0).fit(X[:280].reshape(280, -1))
    A = _mri(R=4) if problem == "mri" else ParallelBeamCT((8, 8), sparse_view_angles(4))
    y = A.forward(X[280:284])
    zeta = 0.3 / A.opnorm()
    out, info = dps_sample(D, A, y, n_steps=100, step_size=zeta, random_state=0)
    free, free_info = dps_sample(D, A, y, n_steps=100, step_size=0.0, random_state=0)  # unconditional sampler
    assert out.shape == X[280:284].shape and info["nfe"] == 2 * 99 + 1
    assert np.mean(info["residual"]) < 0.35 * np.mean(free_info["residual"])  # measured: 0.21
    assert np.mean((out - X[280:284]) ** 2) < 0.2 * np.mean((free - X[280:284]) ** 2)
    again, _ = dps_sample(D, A, y, n_steps=100, step_size=zeta, random_state=0)
    np.testing.assert_array_equal(out, again)


def test_dps_complex_images_and_torch_prior(rng):
    pytest.importorskip("torch")
    from subspacelab.diffusion import TorchDenoiser

    X = _images(rng, n=64)
    Z = X + 1j * X[::-1]
    A = _mri(coils=1)
    D = GaussianDenoiser(n_components=8).fit(np.concatenate([X.reshape(64, -1), X[::-1].reshape(64, -1)], axis=1))
    out, info = dps_sample(D, A, A.forward(Z[:2]), n_steps=20, complex_images=True, random_state=0)
    assert out.shape == (2, 8, 8) and np.iscomplexobj(out)
    T = TorchDenoiser(base_channels=4, channel_mult=(1,), max_steps=3, batch_size=8, n_threads=1, random_state=0).fit(X)
    out, info = dps_sample(T, _mri(), _mri().forward(X[:2]), n_steps=10, random_state=0)
    assert out.shape == (2, 8, 8) and np.all(np.isfinite(out)) and info["nfe"] == 19


def test_dps_every_backend(backend, rng):
    X = _images(rng, n=100).reshape(100, -1)
    mask = (rng.random(64) < 0.5).astype(float)
    ref, _ = dps_sample(GaussianDenoiser(n_components=5).fit(X), Inpainting(mask), X[:2] * mask, n_steps=15,
                        random_state=0)
    with config_context(array_api_dispatch=True):
        D = GaussianDenoiser(n_components=5).fit(backend.asarray(X))
        out, _ = dps_sample(D, Inpainting(backend.asarray(mask)), backend.asarray(X[:2] * mask), n_steps=15,
                            random_state=0)
    assert type(out) is type(backend.asarray(X))
    np.testing.assert_allclose(backend.to_numpy(out), ref, atol=1e-8)


def test_dps_bad_input(rng):
    X = _images(rng, n=50).reshape(50, -1)
    D = GaussianDenoiser(n_components=3).fit(X)
    A = _mri()
    y = A.forward(X[:2].reshape(2, 8, 8))
    with pytest.raises(ValueError, match="shape"):
        dps_sample(D, A, y[:, :, :4])
    with pytest.raises(ValueError, match="n_steps"):
        dps_sample(D, A, y, n_steps=0)
    with pytest.raises(ValueError, match="step_size"):
        dps_sample(D, A, y, step_size=-1.0)
    bad = y.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        dps_sample(D, A, bad)
    with pytest.raises(TypeError, match="LinearOperator"):
        dps_sample(D, np.eye(3), y)
    with pytest.raises(TypeError, match="closed-form"):
        dps_sample(object(), A, y, n_steps=2)
    with pytest.raises(TypeError, match="real operator"):
        dps_sample(D, ParallelBeamCT((8, 8), sparse_view_angles(3)), np.zeros((2, 3, 12)),
                   complex_images=True)
    with pytest.raises(ValueError, match="expects 64 values"):
        dps_sample(D, Inpainting(np.ones(64)), X[:2], complex_images=True)


# ---------------------------------------------------------------- DDNM
def test_ddnm_is_range_null_projection_and_equals_one_step_dds(rng):
    """Single-coil Cartesian MRI of complex images: A^+ = A^H exactly; DDNM = DDS with one CG step and the
    standard DDIM eta (spec 2.2: for a partial isometry one CG step is the range-null projection)."""
    X = _images(rng)
    rows = np.concatenate([X.reshape(300, -1), X[::-1].reshape(300, -1)], axis=1)
    D = GaussianDenoiser(n_components=8).fit(rows)
    A = _mri(coils=1, R=4)
    Z = X[:3] + 1j * X[::-1][:3]
    y = A.forward(Z)
    out = ddnm_sample(D, A, y, n_steps=12, eta=0.85, complex_images=True, random_state=0)
    np.testing.assert_allclose(A.forward(out), y, atol=1e-12)
    dds = dds_sample(D, A, y, n_steps=12, cg_iter=1, eta=0.85, renoise="ddim", complex_images=True, random_state=0)
    np.testing.assert_allclose(out, dds, atol=1e-9)
    np.testing.assert_array_equal(out, ddnm_sample(D, A, y, n_steps=12, eta=0.85, complex_images=True, random_state=0))
    # the null-space content is the prior's: it differs between seeds, the measured part does not
    other = ddnm_sample(D, A, y, n_steps=12, eta=0.85, complex_images=True, random_state=5)
    assert not np.allclose(other, out)
    np.testing.assert_allclose(A.forward(other), y, atol=1e-12)


def test_ddnm_inpainting_keeps_revealed_pixels(rng):
    X = _images(rng).reshape(300, -1)
    D = GaussianDenoiser(n_components=6).fit(X[:280])
    mask = (rng.random(64) < 0.4).astype(float)
    A = Inpainting(mask)
    out = ddnm_sample(D, A, A.forward(X[280:]), n_steps=20, random_state=0)
    np.testing.assert_allclose(out[:, mask > 0], X[280:, mask > 0], atol=1e-12)
    assert np.mean((out - X[280:]) ** 2) < 0.2 * np.mean((X[280:] - X[:280].mean(axis=0)) ** 2)


def test_ddnm_refuses_operators_without_exact_pseudo_inverse(rng):
    X = _images(rng, n=50)
    D = GaussianDenoiser(n_components=3).fit(X.reshape(50, -1))
    for A in (_mri(coils=2), ParallelBeamCT((8, 8), sparse_view_angles(4)), _mri(coils=1)):  # last: real images
        with pytest.raises(ValueError, match="exact pseudo-inverse"):
            ddnm_sample(D, A, A.forward(X[:2]), n_steps=3)
    with pytest.raises(ValueError, match="n_steps"):
        ddnm_sample(D, Inpainting(np.ones(64)), X[:2].reshape(2, -1), n_steps=0)
    with pytest.raises(ValueError, match="shape"):
        ddnm_sample(D, Inpainting(np.ones(64)), X[:2])
