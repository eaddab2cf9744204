"""weighted_logdet kernel: definition, MLC identities, and equality of every implementation."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from subspacelab.kernels import available_backends, sinkhorn, weighted_logdet
from subspacelab.rate import compressed_coding_rate

pytestmark = pytest.mark.cudasim


@st.composite
def problem(draw, max_n=6, max_d=4, max_m=5):
    n, d, m = draw(st.integers(1, max_n)), draw(st.integers(1, max_d)), draw(st.integers(1, max_m))
    Z = draw(arrays(np.float64, (n, d), elements=st.floats(-2, 2, width=64)))
    W = draw(arrays(np.float64, (n, m), elements=st.floats(0, 3, width=64)))
    return Z, W


def brute(Z, W, s):
    d = Z.shape[1]
    logdet, quad = [], []
    for j in range(W.shape[1]):
        M = np.eye(d) + s * np.einsum("i,ia,ib->ab", W[:, j], Z, Z)
        logdet.append(np.linalg.slogdet(M)[1])
        quad.append(np.einsum("ia,ab,ib->i", Z, np.linalg.inv(M), Z))
    return np.array(logdet), np.stack(quad, axis=1)


@given(p=problem(), s=st.floats(0.01, 20))
def test_generic_matches_the_definition(p, s):
    Z, W = p
    res = weighted_logdet(Z, W, s, return_quadratic=True, backend="generic")
    ld, q = brute(Z, W, s)
    np.testing.assert_allclose(res.logdet, ld, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(res.quadratic, q, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("impl", available_backends())
@given(p=problem(), s=st.floats(0.01, 20), dtype=st.sampled_from([np.float64, np.float32]), quad=st.booleans())
def test_every_implementation_equals_generic(impl, p, s, dtype, quad):
    Z, W = (a.astype(dtype) for a in p)
    ref = weighted_logdet(Z, W, s, return_quadratic=quad, backend="generic")
    got = weighted_logdet(Z, W, s, return_quadratic=quad, backend=impl)
    tol = 1e-9 if dtype == np.float64 else 2e-3
    assert got.logdet.dtype == dtype and got.logdet.shape == (W.shape[1],)
    np.testing.assert_allclose(got.logdet, ref.logdet, rtol=tol, atol=tol)
    if quad:
        assert got.quadratic.shape == W.shape and got.quadratic.dtype == dtype
        np.testing.assert_allclose(got.quadratic, ref.quadratic, rtol=tol, atol=tol)
    else:
        assert got.quadratic is None


def test_generic_chunks_columns(monkeypatch, rng):
    import sys

    mod = sys.modules["subspacelab.kernels.weighted_logdet"]  # the module, not the function

    Z, W = rng.normal(size=(9, 3)), rng.random((9, 7))
    ref = weighted_logdet(Z, W, 1.5, return_quadratic=True, backend="generic")
    monkeypatch.setattr(mod, "_MAX_CHUNK_ELEMENTS", 9 * 2)  # two rows / columns per chunk
    got = weighted_logdet(Z, W, 1.5, return_quadratic=True, backend="generic")
    np.testing.assert_allclose(got.logdet, ref.logdet, rtol=1e-13)
    np.testing.assert_allclose(got.quadratic, ref.quadratic, rtol=1e-12)


def test_every_backend_gives_the_mlc_compressed_rate(backend, rng):
    """sum_j 1/(2n) logdet(I + d/eps^2 Z^T diag(Gamma_j) Z) = rate.compressed_coding_rate(Z, Gamma)."""
    n, d, eps_sq = 12, 4, 0.3
    Z = rng.normal(size=(n, d))
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    gamma = sinkhorn(np.abs(Z @ Z.T), 0.3, tol=1e-13).plan
    Zb, Gb = backend.asarray(Z), backend.asarray(gamma)
    res = weighted_logdet(Zb, Gb, d / eps_sq, return_quadratic=True)
    assert type(res.logdet) is type(Zb)
    rc = backend.to_numpy(backend.xp.sum(res.logdet)) / (2 * n)
    np.testing.assert_allclose(rc, float(compressed_coding_rate(Z, gamma, eps_sq=eps_sq)), rtol=1e-10)
    # quadratic forms: the fixed-mass membership gradient beta/(2n) z_i^T M_j^{-1} z_i
    # equals the full membership gradient plus the mass-change terms, which vanish here in sum
    q = backend.to_numpy(res.quadratic)
    assert np.all(q > 0) and np.all(q <= 1.0 + 1e-12)  # z^T M^{-1} z <= |z|^2 since M >= I


def test_bad_input(rng):
    Z, W = rng.normal(size=(4, 2)), rng.random((4, 3))
    with pytest.raises(ValueError, match="one row per row of Z"):
        weighted_logdet(Z, W[:3], 1.0)
    with pytest.raises(ValueError, match="nonnegative"):
        weighted_logdet(Z, -W, 1.0)
    with pytest.raises(ValueError, match="scale"):
        weighted_logdet(Z, W, 0.0)
    with pytest.raises(ValueError, match="NaN"):
        weighted_logdet(Z * np.nan, W, 1.0)
    with pytest.raises(ValueError, match="2-dimensional"):
        weighted_logdet(Z[0], W, 1.0)
