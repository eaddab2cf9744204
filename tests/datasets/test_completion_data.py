"""make_low_rank_matrix_completion and load_movielens_100k."""

import importlib.util

import numpy as np
import pytest
import scipy.sparse as sp

from subspacelab.datasets import (
    load_movielens_100k,
    make_low_rank_matrix_completion,
    movielens_100k_path,
    oversampling_to_probability,
)


def test_generator_shapes_rank_scale_and_sampling():
    d = make_low_rank_matrix_completion(200, 150, 4, sampling=0.3, random_state=0)
    M = d.U @ d.V.T
    assert d.X.shape == (200, 150) and np.linalg.matrix_rank(M) == 4
    assert np.mean(M**2) == pytest.approx(1.0, rel=1e-12)  # unit mean square
    obs = ~np.isnan(d.X)
    assert abs(obs.mean() - 0.3) < 0.01
    np.testing.assert_allclose(d.X[obs], M[obs], rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(np.sort(d.rows * 150 + d.cols), np.flatnonzero(obs))


def test_generator_noise_condition_number_and_sparse_output():
    d = make_low_rank_matrix_completion(300, 300, 3, sampling=0.5, noise=0.1, condition_number=10.0, dense=False, random_state=1)
    assert sp.issparse(d.X) and d.X.nnz == d.entries.size
    M = d.U @ d.V.T
    resid = d.entries - M[d.rows, d.cols]
    assert np.std(resid) == pytest.approx(0.1, rel=0.05)
    s = np.linalg.svd(M, compute_uv=False)[:3]
    assert s[0] / s[2] == pytest.approx(10.0, rel=1e-10)


def test_generator_is_seeded_and_coherence_concentrates_rows():
    a = make_low_rank_matrix_completion(100, 80, 2, sampling=0.4, random_state=3)
    b = make_low_rank_matrix_completion(100, 80, 2, sampling=0.4, random_state=3)
    np.testing.assert_array_equal(a.X, b.X)

    def mu(U):
        Q = np.linalg.qr(U)[0]
        return U.shape[0] / Q.shape[1] * np.max(np.sum(Q**2, axis=1))

    inc = make_low_rank_matrix_completion(400, 400, 3, random_state=0)
    coh = make_low_rank_matrix_completion(400, 400, 3, coherence=1.0, random_state=0)
    assert mu(coh.U) > 5 * mu(inc.U)


def test_power_law_sampling_is_skewed_with_the_same_budget():
    d = make_low_rank_matrix_completion(400, 300, 2, sampling=0.1, scheme="power_law", random_state=0)
    deg = np.sum(~np.isnan(d.X), axis=1)
    assert abs(deg.sum() / (400 * 300) - 0.1) < 0.02
    assert deg.max() > 5 * np.median(deg)


def test_oversampling_conversion():
    p = oversampling_to_probability(100, 80, 5, 3.0)
    assert p * 100 * 80 == pytest.approx(3.0 * 5 * (100 + 80 - 5))


@pytest.mark.parametrize(
    "kw, err, match",
    [
        (dict(rank=0), ValueError, "rank must be in"),
        (dict(rank=30), ValueError, "rank must be in"),
        (dict(sampling=0.0), ValueError, "sampling must be in"),
        (dict(sampling=1.5), ValueError, "sampling must be in"),
        (dict(noise=-1.0), ValueError, "noise must be in"),
        (dict(condition_number=0.5), ValueError, "condition_number must be in"),
        (dict(scheme="grid"), ValueError, "scheme must be one of"),
    ],
)
def test_generator_bad_parameters(kw, err, match):
    with pytest.raises(err, match=match):
        make_low_rank_matrix_completion(30, 20, **{"rank": 2, **kw})


@pytest.mark.data
def test_movielens_100k_from_the_recbole_wheel():
    if importlib.util.find_spec("recbole") is None:
        pytest.skip("MovieLens-100k is read from the recbole wheel: pip install --no-deps recbole==1.2.1")
    ml = load_movielens_100k()
    assert ml.X.shape == (943, 1682) and ml.X.nnz == 100_000
    assert set(np.unique(ml.ratings)) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert np.all(np.diff(ml.X.indptr) > 0) and np.all(np.bincount(ml.X.indices, minlength=1682) > 0)
    assert ml.ratings.mean() == pytest.approx(3.52986, abs=1e-5)


def test_movielens_loader_explains_a_missing_wheel(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None)
    with pytest.raises(ImportError, match="pip install --no-deps recbole"):
        movielens_100k_path()
