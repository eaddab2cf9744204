"""ELL sparse matvec: every implementation equals the generic one and the dense product."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from subspacelab.kernels import available_backends, ell_matvec

pytestmark = pytest.mark.cudasim


@st.composite
def problems(draw):
    n_out = draw(st.integers(1, 6))
    n_in = draw(st.integers(1, 7))
    k = draw(st.integers(1, 4))
    batch = draw(st.sampled_from([(), (1,), (2,), (2, 3)]))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_in, size=(n_out, k)).astype(np.int32)
    w = rng.normal(size=(n_out, k)) * (rng.random((n_out, k)) < 0.8)
    x = rng.normal(size=batch + (n_in,))
    return idx, w, x


def _dense(idx, w, n_in):
    M = np.zeros((idx.shape[0], n_in))
    for r in range(idx.shape[0]):
        for j in range(idx.shape[1]):
            M[r, idx[r, j]] += w[r, j]
    return M


@pytest.mark.parametrize("impl", available_backends())
@given(p=problems(), dtype=st.sampled_from([np.float64, np.float32]))
def test_every_implementation_equals_generic_and_dense(impl, p, dtype):
    idx, w, x = p
    x = x.astype(dtype)
    ref = ell_matvec(idx, w, x, backend="generic")
    got = ell_matvec(idx, w, x, backend=impl)
    assert got.shape == x.shape[:-1] + (idx.shape[0],) and got.dtype == x.dtype
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(ref, x.astype(np.float64) @ _dense(idx, w, x.shape[-1]).T, rtol=tol, atol=tol)


def test_every_backend_keeps_namespace(backend, rng):
    from subspacelab._backend import device

    idx = backend.asarray(rng.integers(0, 5, size=(4, 3)).astype(np.int32))
    w = backend.asarray(rng.normal(size=(4, 3)))
    x = backend.asarray(rng.normal(size=(2, 5)))
    y = ell_matvec(idx, w, x)
    assert type(y) is type(x) and device(y) == device(x)
    ref = backend.to_numpy(x) @ _dense(backend.to_numpy(idx), backend.to_numpy(w), 5).T
    np.testing.assert_allclose(backend.to_numpy(y), ref, atol=1e-12)


def test_generic_blocks_match_one_shot(monkeypatch, rng):
    import sys

    mod = sys.modules["subspacelab.kernels.ell_matvec"]

    idx = rng.integers(0, 9, size=(50, 3)).astype(np.int32)
    w = rng.normal(size=(50, 3))
    x = rng.normal(size=(2, 9))
    ref = ell_matvec(idx, w, x, backend="generic")
    monkeypatch.setattr(mod, "_BLOCK_ELEMENTS", 7)
    np.testing.assert_allclose(ell_matvec(idx, w, x, backend="generic"), ref, atol=1e-13)


def test_bad_input():
    idx = np.zeros((2, 2), dtype=np.int32)
    with pytest.raises(ValueError, match="one shape"):
        ell_matvec(idx, np.zeros((2, 3)), np.ones(3))
    with pytest.raises(TypeError, match="integer"):
        ell_matvec(idx.astype(float), np.zeros((2, 2)), np.ones(3))
    with pytest.raises(TypeError, match="real floating"):
        ell_matvec(idx, np.zeros((2, 2)), np.ones(3, dtype=complex))
    with pytest.raises(ValueError, match="NaN"):
        ell_matvec(idx, np.zeros((2, 2)), np.array([np.nan, 1.0]))


@pytest.mark.parametrize("impl", available_backends())
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_ct_projector_every_kernel_is_matched_and_equal(impl, dtype, rng):
    from subspacelab.operators import ParallelBeamCT, limited_angle_angles, sparse_view_angles

    for shape, angles in [((6, 6), sparse_view_angles(3)), ((5, 7), limited_angle_angles(4))]:
        A = ParallelBeamCT(shape, angles, dtype=dtype, backend=impl)
        G = ParallelBeamCT(shape, angles, dtype=dtype, backend="generic")
        x = rng.normal(size=(2, *shape)).astype(dtype)
        y = rng.normal(size=(2, *A.out_shape)).astype(dtype)
        Ax, AHy = A.forward(x), A.adjoint(y)
        tol = 1e-6 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(Ax, G.forward(x), rtol=tol, atol=tol)
        np.testing.assert_allclose(AHy, G.adjoint(y), rtol=tol, atol=tol)
        lhs, rhs = np.vdot(Ax.astype(float), y.astype(float)), np.vdot(x.astype(float), AHy.astype(float))
        assert abs(lhs - rhs) <= tol * np.linalg.norm(Ax) * np.linalg.norm(y)
