"""countsketch: implementations agree, and the sketch is the CountSketch it claims to be."""

import array_api_compat.numpy as xpn
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st

from subspacelab.kernels import available_backends, countsketch
from subspacelab.kernels.sketch import hash_buckets


def _problem(seed, n_groups, n_feat, k, density):
    rng = np.random.default_rng(seed)
    A = sp.random(n_groups, n_feat, density=density, random_state=rng, format="csr")
    return A.indptr.astype(np.int64), A.indices.astype(np.int64), A.data, rng.standard_normal((n_feat, k))


@pytest.mark.parametrize("impl", available_backends())
@given(
    seed=st.integers(0, 2**31 - 1),
    n_groups=st.integers(0, 6),
    n_feat=st.integers(1, 9),
    k=st.integers(1, 3),
    s=st.integers(1, 5),
    sketch_seed=st.integers(0, 2**31 - 1),
)
def test_every_backend_matches_generic(impl, seed, n_groups, n_feat, k, s, sketch_seed):
    indptr, indices, data, F = _problem(seed, n_groups, n_feat, k, 0.6)
    SA0, Sb0 = countsketch(indptr, indices, data, F, s, seed=sketch_seed, backend="generic")
    SA, Sb = countsketch(indptr, indices, data, F, s, seed=sketch_seed, backend=impl)
    assert SA.shape == (n_groups, s, k) and Sb.shape == (n_groups, s)
    np.testing.assert_allclose(SA, SA0, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(Sb, Sb0, rtol=1e-12, atol=1e-12)


@given(seed=st.integers(0, 2**31 - 1), s=st.integers(1, 6), sketch_seed=st.integers(0, 2**31 - 1))
def test_equals_the_explicit_sketch_matrix(seed, s, sketch_seed):
    """S A with S built entry by entry: one +-1 per column, at the hashed bucket."""
    indptr, indices, data, F = _problem(seed, 4, 8, 2, 0.7)
    SA, Sb = countsketch(indptr, indices, data, F, s, seed=sketch_seed)
    for g in range(4):
        cols = indices[indptr[g] : indptr[g + 1]]
        bucket, sign = hash_buckets(sketch_seed, np.array([g]), cols, s, xpn)
        S = np.zeros((s, cols.size))
        S[bucket, np.arange(cols.size)] = sign
        assert np.all(np.abs(S).sum(axis=0) == 1)
        np.testing.assert_allclose(SA[g], S @ F[cols], atol=1e-12)
        np.testing.assert_allclose(Sb[g], S @ data[indptr[g] : indptr[g + 1]], atol=1e-12)


def test_hash_is_balanced_and_seeded():
    cols = np.arange(20000, dtype=np.int64)
    bucket, sign = hash_buckets(3, np.array([5]), cols, 16, xpn)
    counts = np.bincount(bucket, minlength=16)
    assert counts.min() > 1000 and counts.max() < 1500  # 1250 expected per bucket
    assert abs(np.mean(sign)) < 0.03
    other, _ = hash_buckets(4, np.array([5]), cols, 16, xpn)
    assert np.mean(other == bucket) < 0.1


def test_sketch_and_solve_residual_is_near_optimal():
    """Spec A.8.9(c) on a fixed-seed suite: with s >> k the sketch-and-solve residual is within
    10% of the least-squares optimum."""
    rng = np.random.default_rng(0)
    n, k, s = 2000, 3, 300
    F = rng.standard_normal((n, k))
    y = F @ rng.standard_normal(k) + rng.standard_normal(n)
    indptr = np.array([0, n], dtype=np.int64)
    indices = np.arange(n, dtype=np.int64)
    opt = np.linalg.norm(F @ np.linalg.lstsq(F, y, rcond=None)[0] - y)
    for seed in range(5):
        SA, Sb = countsketch(indptr, indices, y, F, s, seed=seed)
        x = np.linalg.lstsq(SA[0], Sb[0], rcond=None)[0]
        assert np.linalg.norm(F @ x - y) <= 1.1 * opt


def test_namespace_follows_input(backend):
    indptr, indices, data, F = _problem(1, 5, 6, 2, 0.8)
    ref = countsketch(indptr, indices, data, F, 3, seed=2)
    got = countsketch(*(backend.asarray(a) for a in (indptr, indices, data, F)), 3, seed=2)
    np.testing.assert_allclose(backend.to_numpy(got[0]), ref[0], atol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(got[1]), ref[1], atol=1e-12)


def test_bad_sketch_size():
    indptr, indices, data, F = _problem(1, 2, 3, 2, 1.0)
    with pytest.raises(ValueError, match="sketch_size must be in"):
        countsketch(indptr, indices, data, F, 0)
    with pytest.raises(TypeError, match="sketch_size must be an integer"):
        countsketch(indptr, indices, data, F, 2.5)
