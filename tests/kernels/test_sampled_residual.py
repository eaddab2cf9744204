"""sampled_residual: implementations agree with the dense definition."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from subspacelab.kernels import available_backends, sampled_residual


@pytest.mark.parametrize("impl", available_backends())
@given(
    seed=st.integers(0, 2**31 - 1),
    m=st.integers(1, 8),
    n=st.integers(1, 8),
    k=st.integers(1, 4),
    nnz=st.integers(0, 30),
    dtype=st.sampled_from([np.float64, np.float32]),
)
def test_matches_dense_definition(impl, seed, m, n, k, nnz, dtype):
    rng = np.random.default_rng(seed)
    U = rng.standard_normal((m, k)).astype(dtype)
    V = rng.standard_normal((n, k)).astype(dtype)
    rows = rng.integers(0, m, nnz)
    cols = rng.integers(0, n, nnz)
    vals = rng.standard_normal(nnz).astype(dtype)
    got = sampled_residual(rows, cols, vals, U, V, backend=impl)
    dense = (U.astype(np.float64) @ V.T.astype(np.float64))[rows, cols]
    assert got.dtype == dtype and got.shape == (nnz,)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(got, vals - dense, rtol=tol, atol=tol * 10)


def test_namespace_follows_input(backend):
    rng = np.random.default_rng(0)
    U, V = rng.standard_normal((4, 2)), rng.standard_normal((5, 2))
    rows, cols, vals = np.array([0, 3, 2]), np.array([4, 0, 1]), np.array([1.0, 2.0, 3.0])
    got = sampled_residual(*(backend.asarray(a) for a in (rows, cols, vals, U, V)))
    np.testing.assert_allclose(backend.to_numpy(got), vals - (U @ V.T)[rows, cols], atol=1e-12)


def test_bad_input():
    U, V = np.ones((3, 2)), np.ones((4, 2))
    with pytest.raises(ValueError, match="rows must lie in"):
        sampled_residual(np.array([3]), np.array([0]), np.array([1.0]), U, V)
    with pytest.raises(ValueError, match="cols must lie in"):
        sampled_residual(np.array([0]), np.array([-1]), np.array([1.0]), U, V)
    with pytest.raises(ValueError, match="one length"):
        sampled_residual(np.array([0, 1]), np.array([0]), np.array([1.0]), U, V)
    with pytest.raises(ValueError, match="equal columns"):
        sampled_residual(np.array([0]), np.array([0]), np.array([1.0]), U, np.ones((4, 3)))
    with pytest.raises(TypeError, match="rows must have an integer dtype"):
        sampled_residual(np.array([0.0]), np.array([0]), np.array([1.0]), U, V)
