"""Classical baselines: adjoint, CG least squares, ADMM-TV."""

import numpy as np
import pytest

from subspacelab.diffusion.baselines import (
    adjoint_reconstruction,
    finite_differences,
    finite_differences_adjoint,
    least_squares,
    tv_admm,
)
from subspacelab.metrics import psnr
from subspacelab.operators import MultiCoilMRI, ParallelBeamCT, birdcage_maps, sampling_mask, sparse_view_angles


def test_finite_differences_adjoint(backend):
    rng = np.random.default_rng(0)
    x, g = rng.normal(size=(2, 5, 7)), rng.normal(size=(2, 2, 5, 7))
    xp = backend.xp
    Dx = backend.to_numpy(finite_differences(backend.asarray(x), xp))
    Dtg = backend.to_numpy(finite_differences_adjoint(backend.asarray(g), xp))
    np.testing.assert_allclose(np.sum(Dx * g), np.sum(x * Dtg), rtol=1e-12)


def test_full_mask_least_squares_is_exact():
    rng = np.random.default_rng(1)
    x = rng.random((2, 8, 8))
    A = MultiCoilMRI(np.ones((8, 8)), birdcage_maps((8, 8), n_coils=3))
    np.testing.assert_allclose(adjoint_reconstruction(A, A.forward(x)), x, atol=1e-12)
    np.testing.assert_allclose(least_squares(A, A.forward(x), n_iter=2), x, atol=1e-12)
    xc = x + 1j * rng.random((2, 8, 8))
    out = least_squares(A, A.forward(xc), n_iter=2, complex_images=True)
    assert np.iscomplexobj(out)
    np.testing.assert_allclose(out, xc, atol=1e-12)


def test_tv_beats_least_squares_on_piecewise_constant_ct():
    n = 24
    x = np.zeros((1, n, n))
    x[0, 6:18, 5:15] = 0.8
    x[0, 10:14, 12:20] = 0.4
    A = ParallelBeamCT((n, n), sparse_view_angles(8))
    y = A.forward(x)
    ls = least_squares(A, y, n_iter=30)
    tv = tv_admm(A, y, lam=0.05, n_iter=100)
    assert float(psnr(x[0], tv[0], data_range=1.0)) > float(psnr(x[0], ls[0], data_range=1.0)) + 5
    with pytest.raises(TypeError, match="real operator"):
        tv_admm(A, y, complex_images=True)
    with pytest.raises(ValueError, match="trailing shape"):
        least_squares(A, y[..., :3])
    with pytest.raises(ValueError, match="lam"):
        tv_admm(A, y, lam=0.0)


def test_tv_small_lambda_converges_to_least_squares_on_determined_mri():
    rng = np.random.default_rng(2)
    x = rng.random((1, 8, 8))
    m = sampling_mask((8, 8), "equispaced", acceleration=2, center_fraction=0.25, random_state=0).mask
    A = MultiCoilMRI(m, birdcage_maps((8, 8), n_coils=4))
    y = A.forward(x)
    tv = tv_admm(A, y, lam=1e-6, rho=1e-3, n_iter=60, cg_iter=10)
    np.testing.assert_allclose(tv, x, atol=5e-3)
