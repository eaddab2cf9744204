"""Operators of subspacelab.operators: adjoint (dot) tests on every backend, dtype and odd/even
size (specs/diffusion_flow.md section 8, items 1-3), unitary pieces, masks, bad input."""

import math

import numpy as np
import pytest

from subspacelab.operators import (
    Identity,
    Inpainting,
    MultiCoilMRI,
    ParallelBeamCT,
    birdcage_maps,
    fft2c,
    ifft2c,
    limited_angle_angles,
    sampling_mask,
    sparse_view_angles,
)

RTOL = {"float32": 1e-6, "float64": 1e-12}
CDT = {"float32": "complex64", "float64": "complex128"}


def _rand(rng, shape, complex_):
    x = rng.normal(size=shape)
    return x + 1j * rng.normal(size=shape) if complex_ else x


def _dot(backend, a, b):
    a, b = backend.to_numpy(a).astype(np.complex128), backend.to_numpy(b).astype(np.complex128)
    return np.vdot(a, b)


def _adjoint_mismatch(backend, A, x, y):
    Ax, AHy = A.forward(x), A.adjoint(y)
    lhs, rhs = _dot(backend, Ax, y), _dot(backend, x, AHy)
    scale = np.linalg.norm(backend.to_numpy(Ax)) * np.linalg.norm(backend.to_numpy(y))
    return abs(lhs - rhs) / scale


def _mri(backend, shape, n_coils, dtype, rng, kind="uniform1d"):
    xp = backend.xp
    m = sampling_mask(shape, kind, acceleration=3, center_fraction=0.1, random_state=rng).mask
    maps = birdcage_maps(shape, n_coils, xp=xp, device=backend.device, dtype=getattr(xp, CDT[dtype]))
    return MultiCoilMRI(backend.asarray(m, getattr(xp, dtype)), maps)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(8, 8), (7, 9)])
def test_mri_adjoint(backend, dtype, shape, rng):
    A = _mri(backend, shape, 3, dtype, rng)
    cdt = getattr(backend.xp, CDT[dtype])
    for batch in [(), (2,)]:
        x = backend.asarray(_rand(rng, batch + shape, True), cdt)
        y = backend.asarray(_rand(rng, batch + A.out_shape, True), cdt)
        assert _adjoint_mismatch(backend, A, x, y) < RTOL[dtype]
        assert A.forward(x).dtype == cdt and tuple(A.forward(x).shape) == batch + A.out_shape
        np.testing.assert_allclose(backend.to_numpy(A.normal(x)), backend.to_numpy(A.adjoint(A.forward(x))),
                                   rtol=10 * RTOL[dtype], atol=10 * RTOL[dtype])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(8, 8), (7, 9)])
def test_ct_adjoint(backend, dtype, shape, rng):
    xp = backend.xp
    A = ParallelBeamCT(shape, sparse_view_angles(5), xp=xp, device=backend.device, dtype=getattr(xp, dtype))
    for batch in [(), (3,)]:
        x = backend.asarray(rng.normal(size=batch + shape), getattr(xp, dtype))
        y = backend.asarray(rng.normal(size=batch + A.out_shape), getattr(xp, dtype))
        assert _adjoint_mismatch(backend, A, x, y) < RTOL[dtype]
        assert A.forward(x).dtype == x.dtype


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("complex_", [False, True])
def test_inpainting_identity_and_compositions_adjoint(backend, dtype, complex_, rng):
    xp = backend.xp
    dt = getattr(xp, CDT[dtype] if complex_ else dtype)
    shape = (5, 6)
    P = Inpainting(backend.asarray(rng.random(shape) < 0.5))
    mri = _mri(backend, shape, 2, dtype, rng)
    cdt = getattr(xp, CDT[dtype])
    # (operator, input complex?, output complex?)
    ops = [(P, complex_, complex_), (Identity(shape), complex_, complex_), (2.5 * P, complex_, complex_),
           (P @ Identity(shape), complex_, complex_), (mri @ P, complex_, True),
           ((1 - 2j) * mri if complex_ else 3.0 * mri, complex_, True), (mri.H, True, True)]
    for A, cin, cout in ops:
        x = backend.asarray(_rand(rng, A.in_shape, cin), cdt if cin else dt)
        y = backend.asarray(_rand(rng, A.out_shape, cout), cdt if cout else dt)
        assert _adjoint_mismatch(backend, A, x, y) < 10 * RTOL[dtype], A


def test_ct_composed_with_inpainting_adjoint(rng):
    A = ParallelBeamCT((6, 6), sparse_view_angles(4))
    P = Inpainting((rng.random((6, 6)) < 0.5).astype(float))
    B = A @ P
    x, y = rng.normal(size=(6, 6)), rng.normal(size=A.out_shape)
    assert abs(np.vdot(B(x), y) - np.vdot(x, B.adjoint(y))) < 1e-12 * np.linalg.norm(B(x)) * np.linalg.norm(y)
    with pytest.raises(ValueError, match="compose"):
        A @ Identity((5, 5))


@pytest.mark.parametrize("shape", [(5, 7), (8, 8), (9, 6)])
def test_centred_fft_is_unitary(backend, shape, rng):
    x = backend.asarray(_rand(rng, shape, True))
    Fx = fft2c(x)
    np.testing.assert_allclose(np.linalg.norm(backend.to_numpy(Fx)), np.linalg.norm(backend.to_numpy(x)), rtol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(ifft2c(Fx)), backend.to_numpy(x), atol=1e-12)
    # the DC coefficient sits at the centre (H // 2, W // 2) and is sum / sqrt(HW)
    ones = backend.asarray(np.ones(shape))
    F1 = backend.to_numpy(fft2c(ones))
    assert abs(F1[shape[0] // 2, shape[1] // 2] - math.sqrt(shape[0] * shape[1])) < 1e-10
    assert np.sum(np.abs(F1) > 1e-9) == 1


@pytest.mark.parametrize("shape", [(8, 8), (7, 9)])
def test_rss_coils_full_mask_gram_is_identity(backend, shape, rng):
    maps = birdcage_maps(shape, 5, xp=backend.xp, device=backend.device)
    np.testing.assert_allclose(np.sum(np.abs(backend.to_numpy(maps)) ** 2, axis=0), 1.0, atol=1e-12)
    A = MultiCoilMRI(backend.asarray(np.ones(shape)), maps)
    x = backend.asarray(_rand(rng, (2, *shape), True))
    np.testing.assert_allclose(backend.to_numpy(A.normal(x)), backend.to_numpy(x), atol=1e-12)
    assert A.acceleration == 1.0
    from subspacelab.operators import conjugate_gradient

    res = conjugate_gradient(A.normal, A.adjoint(A.forward(x)), tol=1e-12, event_ndim=2)
    assert backend.to_numpy(res.n_iter).tolist() == [1, 1]  # A^H A = I: one CG step
    np.testing.assert_allclose(backend.to_numpy(res.x), backend.to_numpy(x), atol=1e-12)


def test_gram_is_hermitian_psd(rng):
    A = _mri_np(rng)
    for _ in range(5):
        x = _rand(rng, A.in_shape, True)
        q = np.vdot(x, A.normal(x))
        assert abs(q.imag) < 1e-12 * abs(q) and q.real >= 0


def _mri_np(rng):
    m = sampling_mask((9, 8), "gaussian1d", acceleration=2, center_fraction=0.2, random_state=rng).mask
    return MultiCoilMRI(m, birdcage_maps((9, 8), 3))


def test_opnorm_matches_dense_svd(rng):
    for A in [ParallelBeamCT((6, 7), sparse_view_angles(4)), _mri_np(rng)]:
        n_in = math.prod(A.in_shape)
        eye = np.eye(n_in).reshape(n_in, *A.in_shape)
        M = A.forward(eye.astype(complex) if A.complex_input else eye).reshape(n_in, -1).T
        np.testing.assert_allclose(A.opnorm(n_iter=2000, tol=1e-14), np.linalg.norm(M, 2), rtol=1e-6)
    A = ParallelBeamCT((6, 7), sparse_view_angles(4), normalize=True)
    np.testing.assert_allclose(A.opnorm(n_iter=2000, tol=1e-14), 1.0, rtol=1e-6)


def test_ct_mass_and_symmetry():
    # a centred single pixel projects to the same profile at every multiple of 90 degrees;
    # every view integrates a constant image to its area: exactly at 0 and 90 degrees, to
    # Joseph's interpolation error (< 0.5 %) at other angles
    A = ParallelBeamCT((9, 9), [0.0, 90.0, 180.0, 270.0])
    x = np.zeros((9, 9))
    x[4, 4] = 1.0
    s = A(x)
    for v in range(1, 4):
        np.testing.assert_allclose(s[v], s[0], atol=1e-12)
    B = ParallelBeamCT((16, 16), sparse_view_angles(12))
    mass = B(np.ones((16, 16))).sum(axis=1)
    np.testing.assert_allclose(mass[[0, 6]], 256.0, rtol=1e-12)
    np.testing.assert_allclose(mass, 256.0, rtol=5e-3)


def test_ct_fbp_recovers_phantom():
    pytest.importorskip("scipy")
    from subspacelab.datasets import DataNotAvailableError, shepp_logan_phantom

    try:
        ph = shepp_logan_phantom(64)
    except DataNotAvailableError as exc:
        pytest.skip(str(exc))
    A = ParallelBeamCT((64, 64), sparse_view_angles(90))
    rec = A.fbp(A(ph))
    psnr = 10 * np.log10(1.0 / np.mean((rec - ph) ** 2))
    assert psnr > 25


def test_geometries():
    np.testing.assert_allclose(sparse_view_angles(8), np.arange(8) * 22.5)
    np.testing.assert_array_equal(limited_angle_angles(), np.arange(120))
    A = ParallelBeamCT((256, 256), sparse_view_angles(1))
    assert A.out_shape == (1, 363)


@pytest.mark.parametrize(
    "kind, acc, cf, expected",
    [("equispaced", 4, 0.08, 4.0), ("equispaced", 8, 0.04, 8.0)],
)
def test_equispaced_realised_acceleration(kind, acc, cf, expected):
    m = sampling_mask((320, 320), kind, acceleration=acc, center_fraction=cf, random_state=0)
    assert abs(m.acceleration - expected) / expected < 0.05
    cols = m.mask[0]
    n_low = round(320 * cf)
    assert np.all(cols[(320 - n_low + 1) // 2 : (320 - n_low + 1) // 2 + n_low] == 1)
    assert np.all(m.mask == m.mask[0])


def test_uniform1d_with_replacement_undersamples_and_without_does_not():
    W = 128
    m_rep = sampling_mask((W, W), "uniform1d", acceleration=4, center_fraction=0.08, random_state=3)
    m_norep = sampling_mask((W, W), "uniform1d", acceleration=4, center_fraction=0.08, random_state=3, replace=False)
    assert m_norep.mask[0].sum() == W // 4
    assert m_rep.mask[0].sum() < W // 4  # DDS draws with replacement: fewer distinct lines
    assert m_rep.acceleration > 4 and m_norep.acceleration == 4
    n_acs = int(W * 0.08)
    assert np.all(m_rep.mask[0, W // 2 - n_acs // 2 : W // 2 - n_acs // 2 + n_acs] == 1)


@pytest.mark.parametrize("replace", [True, False])
@pytest.mark.parametrize("kind", ["gaussian1d", "uniform2d", "gaussian2d", "variable_density2d"])
def test_other_masks(kind, replace):
    m = sampling_mask((64, 64), kind, acceleration=4, center_fraction=0.08, random_state=0, replace=replace)
    assert set(np.unique(m.mask)) <= {0.0, 1.0}
    assert m.acceleration == pytest.approx(64 * 64 / m.mask.sum())
    assert m.mask[32, 32] == 1  # the centre of k-space is always sampled
    assert 2 < m.acceleration < 10
    same = sampling_mask((64, 64), kind, acceleration=4, center_fraction=0.08, random_state=0, replace=replace)
    np.testing.assert_array_equal(m.mask, same.mask)
    if not replace and kind in ("gaussian1d", "uniform2d"):  # exact nominal count without repeats
        n = m.mask[0].sum() if kind == "gaussian1d" else m.mask.sum()
        assert n == (64 // 4 if kind == "gaussian1d" else 64 * 64 // 4)


def test_bad_input(rng):
    m = np.ones((8, 8))
    with pytest.raises(ValueError, match="coil_maps must have shape"):
        MultiCoilMRI(m, birdcage_maps((8, 7), 2))
    with pytest.raises(ValueError, match="mask must be 2-dimensional"):
        MultiCoilMRI(np.ones((2, 8, 8)))
    with pytest.raises(ValueError, match="only 0 and 1"):
        MultiCoilMRI(np.full((8, 8), 0.5))
    A = MultiCoilMRI(m, birdcage_maps((8, 8), 2))
    with pytest.raises(ValueError, match="trailing shape"):
        A.forward(np.ones((8, 9)))
    with pytest.raises(ValueError, match="trailing shape"):
        A.adjoint(np.ones((3, 8, 8), dtype=complex))
    with pytest.raises(TypeError, match="floating"):
        A.forward(np.ones((8, 8), dtype=int))
    C = ParallelBeamCT((8, 8), sparse_view_angles(3))
    with pytest.raises(TypeError, match="real operator"):
        C.forward(np.ones((8, 8), dtype=complex))
    with pytest.raises(TypeError, match="real operator"):
        C.adjoint(np.ones(C.out_shape, dtype=complex))
    with pytest.raises(ValueError, match="angles"):
        ParallelBeamCT((8, 8), [])
    with pytest.raises(ValueError, match="mask must contain only 0 and 1"):
        Inpainting(np.full((3, 3), 2.0))
    with pytest.raises(ValueError, match="kind"):
        sampling_mask((8, 8), "radial")
    with pytest.raises(ValueError, match="acceleration"):
        sampling_mask((8, 8), acceleration=0.5)


def test_namespace_mismatch_rejected():
    torch = pytest.importorskip("torch")
    A = MultiCoilMRI(np.ones((4, 4)))
    with pytest.raises(TypeError, match="namespace"):
        A.forward(torch.ones(4, 4, dtype=torch.complex128))
    with pytest.raises(TypeError, match="one array library"):
        MultiCoilMRI(np.ones((4, 4)), torch.ones(1, 4, 4, dtype=torch.complex128))


def test_torch_autograd_through_operators():
    torch = pytest.importorskip("torch")
    import array_api_compat.torch as xp

    A = ParallelBeamCT((6, 6), sparse_view_angles(3), xp=xp, device=torch.device("cpu"))
    x = torch.randn(6, 6, dtype=torch.float64, requires_grad=True)
    y = torch.randn(*A.out_shape, dtype=torch.float64)
    (A.forward(x) * y).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), A.adjoint(y).numpy(), atol=1e-12)
