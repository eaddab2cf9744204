"""AltMinCompleter: the invariants of spec A.8, the API of issue 4, and bad input."""

import importlib.util
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import sklearn
from hypothesis import assume, given
from hypothesis import strategies as st
from sklearn.exceptions import ConvergenceWarning

from subspacelab import AltMinCompleter
from subspacelab.datasets import make_low_rank_matrix_completion, oversampling_to_probability
from subspacelab.estimators.altmin import clip_rows, demo_row


def _problem(m, n, k, rho, seed, noise=0.0, kappa=1.0):
    p = min(1.0, oversampling_to_probability(m, n, k, rho))
    d = make_low_rank_matrix_completion(m, n, k, sampling=p, noise=noise, condition_number=kappa, random_state=seed)
    return d.X, d.U @ d.V.T


def _rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


# ----------------------------------------------------------------------------- A.8.1 / A.8.2
@given(
    m=st.integers(20, 60),
    n=st.integers(20, 60),
    k=st.integers(1, 3),
    rho=st.floats(5.0, 8.0),
    kappa=st.floats(1.0, 3.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_exact_recovery_of_incoherent_low_rank_matrices(m, n, k, rho, kappa, seed):
    """A.8.1: noiseless incoherent rank-k, rho >= 5, every row/column with > k observations:
    relative Frobenius error < 1e-8; A.8.2: the observations are fitted to 1e-8 max|X|."""
    X, M = _problem(m, n, k, rho, seed, kappa=kappa)
    obs = ~np.isnan(X)
    assume(obs.sum(axis=1).min() > k and obs.sum(axis=0).min() > k)
    est = AltMinCompleter(rank=k, n_iter=200, random_state=seed)
    M_hat = est.fit_transform(X)
    assert _rel(M_hat, M) < 1e-8
    assert np.max(np.abs(M_hat - M)[obs]) <= 1e-8 * np.max(np.abs(M))
    assert est.converged_ and est.n_iter_ <= 200


@pytest.mark.parametrize("solver", ["exact", "cg", "sketch"])
def test_all_solvers_reach_the_same_fixed_point(solver):
    """Issue 4: exact, cg and sketch reach the same completion to 1e-8 (here the truth).

    sketch_size=6 < the row degrees (~20), so the sketched branch really runs."""
    X, M = _problem(80, 70, 3, 4.0, 1)
    ref = AltMinCompleter(rank=3, random_state=0).fit_transform(X)
    got = AltMinCompleter(rank=3, solver=solver, sketch_size=6, random_state=0).fit_transform(X)
    assert _rel(got, ref) < 1e-8
    assert _rel(got, M) < 1e-8


def test_noisy_train_residual_matches_least_squares_prediction():
    """A.8.2: RMS residual on Omega ~ sigma * sqrt(1 - k(m+n-k)/|Omega|) within 20%."""
    sigma = 0.1
    X, M = _problem(120, 100, 3, 5.0, 3, noise=sigma)
    est = AltMinCompleter(rank=3, random_state=0).fit(X)
    n_obs = np.sum(~np.isnan(X))
    assert n_obs >= 2000
    predicted = sigma * np.sqrt(1 - 3 * (120 + 100 - 3) / n_obs)
    assert abs(est.objective_curve_[-1] / predicted - 1) < 0.2
    # and the error on the full matrix scales with the noise (A.4 item 4)
    assert _rel(est.fit_transform(X), M) < 5 * sigma


# ----------------------------------------------------------------------------- A.8.3 / A.8.4
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 4))
def test_fully_observed_gives_the_truncated_svd(seed, k):
    """A.8.3 Eckart-Young: ||X - X_hat|| = sqrt(sum_{i>k} s_i^2), same top-k subspace;
    A.8.4: refitting on the completed matrix returns it."""
    rng = np.random.default_rng(seed)
    # a clear spectral gap after k keeps the top-k subspace well defined
    s = np.concatenate([np.linspace(10, 5, k), np.linspace(1, 0.1, 6)])
    Q1 = np.linalg.qr(rng.standard_normal((30, s.size)))[0]
    Q2 = np.linalg.qr(rng.standard_normal((25, s.size)))[0]
    X = (Q1 * s) @ Q2.T
    est = AltMinCompleter(rank=k, tol=1e-12, n_iter=500, random_state=0)
    X_hat = est.fit_transform(X)
    assert abs(np.linalg.norm(X - X_hat) / np.sqrt(np.sum(s[k:] ** 2)) - 1) < 1e-8
    P_true = Q1[:, :k] @ Q1[:, :k].T
    Uh = np.linalg.svd(X_hat)[0][:, :k]
    assert np.linalg.norm(P_true - Uh @ Uh.T) < 1e-6
    np.testing.assert_allclose(est.singular_values_, s[:k], rtol=1e-8)
    again = AltMinCompleter(rank=k, random_state=1).fit_transform(X_hat)
    assert _rel(again, X_hat) < 1e-10


# ----------------------------------------------------------------------------- A.8.5 - A.8.7
@given(seed=st.integers(0, 2**31 - 1))
def test_permutation_and_transpose_equivariance(seed):
    """A.8.5 / A.8.6 in the recovery regime (tolerance 1e-6: the start is not equivariant)."""
    X, _ = _problem(40, 30, 2, 6.0, seed)
    obs = ~np.isnan(X)
    assume(obs.sum(axis=1).min() > 2 and obs.sum(axis=0).min() > 2)
    rng = np.random.default_rng(seed)
    P, Q = rng.permutation(40), rng.permutation(30)
    base = AltMinCompleter(rank=2, random_state=0).fit_transform(X)
    perm = AltMinCompleter(rank=2, random_state=0).fit_transform(X[P][:, Q])
    np.testing.assert_allclose(perm, base[P][:, Q], atol=1e-6 * np.abs(base).max())
    trans = AltMinCompleter(rank=2, random_state=0).fit_transform(X.T)
    np.testing.assert_allclose(trans, base.T, atol=1e-6 * np.abs(base).max())


@given(c=st.sampled_from([-3.0, 1e-3, 0.5, 1e4]), shift=st.floats(-10, 10))
def test_scale_and_shift_equivariance(c, shift):
    """A.8.7: completion(cX) = c completion(X) (ridge 0, same seed: the same iterates up to
    rounding), and with center='global', completion(X + a) = completion(X) + a."""
    X, _ = _problem(40, 35, 2, 5.0, 11, noise=0.05)
    base = AltMinCompleter(rank=2, n_iter=30, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        Y = base.fit_transform(X)
        Yc = AltMinCompleter(rank=2, n_iter=30, random_state=0).fit_transform(c * X)
        G = AltMinCompleter(rank=2, n_iter=30, center="global", random_state=0).fit_transform(X)
        Gs = AltMinCompleter(rank=2, n_iter=30, center="global", random_state=0).fit_transform(X + shift)
    np.testing.assert_allclose(Yc, c * Y, rtol=1e-6, atol=1e-9 * abs(c) * np.abs(Y).max())
    np.testing.assert_allclose(Gs, G + shift, atol=1e-7 * (np.abs(G).max() + abs(shift)))


# ----------------------------------------------------------------------------- A.8.8
@given(seed=st.integers(0, 2**31 - 1), ridge=st.sampled_from([0.0, 0.5]))
def test_exact_solver_never_increases_the_training_loss(seed, ridge):
    """A.8.8: exact half-steps minimise the (regularised) objective, so the train RMSE is
    non-increasing (ridge 0: QR leaves the objective unchanged; ridge > 0: no QR is done and
    the regularised objective decreases, measured here through the train RMSE plus penalty)."""
    X, _ = _problem(40, 30, 3, 3.0, seed, noise=0.1)
    est = AltMinCompleter(rank=3, ridge=ridge, n_iter=15, tol=0.0, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X)
    curve = np.array(est.objective_curve_)
    if ridge == 0.0:
        assert np.all(np.diff(curve) <= 1e-12 * curve[:-1])
    else:
        assert curve[-1] <= curve[0]


# ----------------------------------------------------------------------------- A.8.11 / A.8.12
def test_dense_and_sparse_encodings_give_identical_fits():
    """A.8.11: dense-with-NaN, COO, CSR and CSC (explicit zeros are observations)."""
    X, _ = _problem(30, 25, 2, 5.0, 5)
    X[0, np.flatnonzero(~np.isnan(X[0]))[0]] = 0.0  # an observed zero must stay observed
    rows, cols = np.nonzero(~np.isnan(X))
    coo = sp.coo_matrix((X[rows, cols], (rows, cols)), shape=X.shape)
    ref = AltMinCompleter(rank=2, random_state=0).fit_transform(X)
    for S in (coo, coo.tocsr(), coo.tocsc(), sp.csr_array(coo)):
        assert S.nnz == rows.size
        np.testing.assert_allclose(AltMinCompleter(rank=2, random_state=0).fit_transform(S), ref, rtol=0, atol=1e-12)


def test_array_api_parity_on_every_backend(backend):
    """A.8.12: fitted attributes live on the input's namespace and device and agree with the
    NumPy (Numba) fit to 1e-10 in float64."""
    X, M = _problem(30, 24, 2, 5.0, 2)
    ref = AltMinCompleter(rank=2, center="biases", random_state=0).fit(X)
    Xb = backend.asarray(X)
    with sklearn.config_context(array_api_dispatch=True):
        est = AltMinCompleter(rank=2, center="biases", random_state=0).fit(Xb)
        M_hat = est.fit_transform(Xb)
        T = est.transform(Xb[:5, :])
        e = est.predict_entries([0, 3], [1, 2])
        score = est.score(Xb)
    from array_api_compat import array_namespace, device

    for attr in ("row_factors_", "components_", "row_bias_", "col_bias_", "singular_values_"):
        a = getattr(est, attr)
        assert array_namespace(a) is array_namespace(Xb)
        assert device(a) == device(Xb)
        np.testing.assert_allclose(backend.to_numpy(a), getattr(ref, attr), rtol=1e-10, atol=1e-10)
    assert device(M_hat) == device(Xb) and device(T) == device(Xb) and device(e) == device(Xb)
    np.testing.assert_allclose(backend.to_numpy(M_hat), ref.fit_transform(X), atol=1e-9)
    np.testing.assert_allclose(backend.to_numpy(T), backend.to_numpy(M_hat)[:5], atol=1e-9)
    assert isinstance(score, float) and score > -1e-8
    assert _rel(backend.to_numpy(M_hat), M) < 1e-8


def test_transform_on_another_namespace_is_refused():
    X, _ = _problem(20, 15, 1, 6.0, 0)
    import array_api_strict as xps

    with sklearn.config_context(array_api_dispatch=True):
        est = AltMinCompleter(rank=1, random_state=0).fit(xps.asarray(X))
        with pytest.raises(ValueError, match="must use the same namespace"):
            est.transform(X)


def test_float32_is_preserved():
    X, M = _problem(40, 30, 2, 6.0, 4)
    est = AltMinCompleter(rank=2, random_state=0)
    out = est.fit_transform(X.astype(np.float32))
    assert out.dtype == np.float32 and est.row_factors_.dtype == np.float32
    assert _rel(out, M) < 1e-4  # float32 rounding level


# ----------------------------------------------------------------------------- A.8.13 and friends
def test_rows_with_fewer_than_k_observations():
    """A.8.13: ridge 0 warns and stays finite; a ridge handles them silently."""
    X, _ = _problem(40, 30, 3, 6.0, 0)
    X[0, :] = np.nan
    X[0, :2] = 1.0  # 2 < k observations
    with pytest.warns(UserWarning, match="1 rows and 0 columns have fewer than 3"):
        est = AltMinCompleter(rank=3, n_iter=20, random_state=0).fit(X)
    assert est.n_underdetermined_rows_ == 1
    assert np.all(np.isfinite(est.transform(X)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        out = AltMinCompleter(rank=3, ridge=1e-3, n_iter=20, random_state=0).fit_transform(X)
    assert np.all(np.isfinite(out))


def test_transform_folds_in_without_refitting():
    X, M = _problem(60, 40, 2, 6.0, 7)
    est = AltMinCompleter(rank=2, random_state=0).fit(X)
    np.testing.assert_allclose(est.transform(X), est.fit_transform(X), atol=1e-10)
    comps = est.components_.copy()
    # new rows of the same model, 10 observations each, are completed exactly
    rng = np.random.default_rng(0)
    new = rng.standard_normal((5, 2)) @ M[:2]  # rows in the row space of M
    Xn = np.full_like(new, np.nan)
    for i in range(5):
        idx = rng.choice(40, 10, replace=False)
        Xn[i, idx] = new[i, idx]
    Xn[4] = np.nan  # a row with no observation gets the offsets (zero here)
    out = est.transform(Xn)
    np.testing.assert_allclose(out[:4], new[:4], atol=1e-8 * np.abs(new).max())
    np.testing.assert_array_equal(out[4], 0.0)
    np.testing.assert_array_equal(est.components_, comps)


def test_predict_entries_and_score():
    X, M = _problem(50, 40, 2, 5.0, 8, noise=0.01)
    est = AltMinCompleter(rank=2, center="biases", random_state=0).fit(X)
    full = est.fit_transform(X)
    rows, cols = np.array([0, 10, 49]), np.array([39, 0, 7])
    np.testing.assert_allclose(est.predict_entries(rows, cols), full[rows, cols], atol=1e-12)
    held_out = np.where(np.isnan(X), M, np.nan)
    pred = full[~np.isnan(held_out)]
    assert est.score(held_out) == pytest.approx(-np.sqrt(np.mean((pred - M[~np.isnan(held_out)]) ** 2)), rel=1e-10)


def test_biases_recover_additive_structure():
    """center='biases': mu + a_i + c_j + U V^T is completed (the model is exact)."""
    rng = np.random.default_rng(0)
    X, M = _problem(60, 50, 2, 8.0, 9)
    a, c = rng.standard_normal(60), rng.standard_normal(50)
    B = 3.0 + a[:, None] + c[None, :]
    est = AltMinCompleter(rank=2, center="biases", random_state=0)
    out = est.fit_transform(X + B)
    assert _rel(out, M + B) < 1e-6
    assert abs(est.global_mean_ - np.nanmean(X + B)) < 1e-12


def test_als_wr_ridge_scaling_is_count_times_ridge():
    """ridge_scaling='count' equals a plain ridge of lambda * n_i on a row with n_i entries."""
    X, _ = _problem(30, 20, 2, 6.0, 1)
    est = AltMinCompleter(rank=2, ridge=0.3, ridge_scaling="count", n_iter=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X)
    V = est.components_.T
    i = 3
    obs = np.flatnonzero(~np.isnan(X[i]))
    A = V[obs]
    u = np.linalg.solve(A.T @ A + 0.3 * obs.size * np.eye(2), A.T @ X[i, obs])
    np.testing.assert_allclose(est.row_factors_[i], u, rtol=1e-8)


def test_sample_splitting_mode_runs_on_disjoint_pieces():
    """Paper mode on easy data: a fully observed noiseless rank-1 300 x 300 matrix, T = 10, so
    every half-step sees its own 1/21 of the entries (~14 per row). It still converges, more
    slowly than the same fit on all entries, which reaches rounding level."""
    rng = np.random.default_rng(0)
    M = np.outer(rng.standard_normal(300), rng.standard_normal(300))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        split = AltMinCompleter(rank=1, n_iter=10, sample_splitting=True, random_state=0).fit_transform(M)
        full = AltMinCompleter(rank=1, n_iter=10, random_state=0).fit_transform(M)
    assert _rel(split, M) < 1e-6
    assert _rel(full, M) < 1e-12 < _rel(split, M)


@given(c=st.floats(0.5, 4.0), seed=st.integers(0, 2**31 - 1))
def test_clipping_bounds_row_norms(c, seed):
    """A.8.10: after trimming, every row norm of U0 is <= c sqrt(k/m) (before the QR)."""
    rng = np.random.default_rng(seed)
    U = rng.standard_normal((50, 3)) * rng.exponential(1.0, (50, 1))
    out = clip_rows(U, c)
    assert np.all(np.linalg.norm(out, axis=1) <= c * np.sqrt(3 / 50) * (1 + 1e-12))
    small = np.linalg.norm(U, axis=1) <= c * np.sqrt(3 / 50)
    np.testing.assert_array_equal(out[small], U[small])


def test_clip_incoherence_option_still_recovers():
    X, M = _problem(50, 40, 2, 6.0, 3)
    assert _rel(AltMinCompleter(rank=2, clip_incoherence=True, random_state=0).fit_transform(X), M) < 1e-8
    assert _rel(AltMinCompleter(rank=2, init="random", random_state=0).fit_transform(X), M) < 1e-8


def test_verbose_and_convergence_warning(capsys):
    X, _ = _problem(30, 30, 2, 3.0, 0)
    with pytest.warns(ConvergenceWarning, match="did not converge in n_iter=2"):
        est = AltMinCompleter(rank=2, n_iter=2, verbose=1, random_state=0).fit(X)
    assert not est.converged_ and est.stop_reason_ == "max_iter" and len(est.objective_curve_) == 2
    assert capsys.readouterr().out.count("train RMSE") == 2


# ----------------------------------------------------------------------------- bad input
def _good():
    X, _ = _problem(20, 15, 2, 6.0, 0)
    return X


@pytest.mark.parametrize(
    "make, params, err, match",
    [
        (lambda: np.where(np.arange(20)[:, None] == 3, np.nan, _good()), {}, ValueError, r"1 rows with no observed entry \(first: \[3\]\)"),
        (lambda: np.where(np.arange(15)[None, :] == 4, np.nan, _good()), {}, ValueError, "1 columns with no observed entry"),
        (_good, {"rank": 16}, ValueError, r"rank=16 must not exceed min\(n_samples, n_features\) = 15"),
        (_good, {"rank": 0}, ValueError, "rank must be in"),
        (_good, {"ridge": -0.1}, ValueError, "ridge must be in"),
        (_good, {"solver": "lsqr"}, ValueError, "solver must be one of"),
        (_good, {"center": "median"}, ValueError, "center must be one of"),
        (_good, {"n_iter": 0}, ValueError, "n_iter must be in"),
        (_good, {"clip_incoherence": -1.0}, ValueError, "clip_incoherence must be in"),
        (_good, {"sample_splitting": "yes"}, TypeError, "sample_splitting must be a bool"),
        (lambda: np.where(np.eye(20, 15, dtype=bool), np.inf, _good()), {}, ValueError, "infinity"),
        (
            lambda: sp.csr_matrix(np.nan_to_num(_good(), nan=0.0) + np.where(np.eye(20, 15, dtype=bool), np.nan, 0)),
            {},
            ValueError,
            "sparse and has NaN",
        ),
        (
            lambda: sp.coo_matrix((np.ones(3), ([0, 0, 1], [1, 1, 2])), shape=(2, 3)),
            {"rank": 1},
            ValueError,
            "duplicate coordinates",
        ),
    ],
)
def test_bad_input_is_named(make, params, err, match):
    with pytest.raises(err, match=match):
        AltMinCompleter(**{"random_state": 0, "rank": 2, **params}).fit(make())


def test_dense_outputs_refuse_above_the_size_limit():
    X = _good()
    est = AltMinCompleter(rank=2, max_dense_entries=100, random_state=0)
    with pytest.raises(ValueError, match="use predict_entries"):
        est.fit_transform(X)
    est.fit(X)
    with pytest.raises(ValueError, match="max_dense_entries=100"):
        est.transform(X)
    assert est.predict_entries([0], [0]).shape == (1,)


def test_predict_entries_and_score_bad_input():
    est = AltMinCompleter(rank=2, random_state=0).fit(_good())
    with pytest.raises(ValueError, match=r"rows must lie in \[0, 20\)"):
        est.predict_entries([20], [0])
    with pytest.raises(TypeError, match="must be integers"):
        est.predict_entries([0.5], [0])
    with pytest.raises(ValueError, match="one length"):
        est.predict_entries([0, 1], [0])
    with pytest.raises(ValueError, match="training shape"):
        est.score(_good()[:10])
    with pytest.raises(ValueError, match="no observed entry"):
        est.score(np.full((20, 15), np.nan))


def test_sparse_input_observes_stored_entries_only():
    """Implicit zeros are missing: a sparse matrix of a low-rank matrix's entries completes it,
    while reading the zeros as observed (the scikit-learn convention) would not."""
    X, M = _problem(40, 30, 2, 6.0, 12)
    rows, cols = np.nonzero(~np.isnan(X))
    S = sp.csr_matrix((X[rows, cols], (rows, cols)), shape=X.shape)
    assert _rel(AltMinCompleter(rank=2, random_state=0).fit_transform(S), M) < 1e-8
    zeros_observed = AltMinCompleter(rank=2, random_state=0).fit_transform(S.toarray())
    assert _rel(zeros_observed, M) > 0.1


# ----------------------------------------------------------------------------- demo and data
@pytest.mark.slow
def test_demo_row_synthetic_fallback(monkeypatch):
    """Without recbole the demo completes a synthetic matrix (and still reports parity)."""
    import subspacelab.datasets as ds

    def absent():
        raise ImportError("recbole is not installed")

    monkeypatch.setattr(ds, "load_movielens_100k", absent)
    row = demo_row()
    assert row["data"].startswith("synthetic") and "array_api_strict" in row["data"]
    assert set(row) == {"method", "data", "metric", "value", "baseline", "baseline_value"}
    assert row["value"] < 1e-8 < row["baseline_value"]


@pytest.mark.data
def test_movielens_100k_one_fold_beats_the_bias_baseline():
    if importlib.util.find_spec("recbole") is None:
        pytest.skip("MovieLens-100k is read from the recbole wheel: pip install --no-deps recbole==1.2.1")
    row = demo_row()
    assert set(row) == {"method", "data", "metric", "value", "baseline", "baseline_value"}
    assert row["data"].startswith("MovieLens-100k")
    assert row["value"] < 0.93
    assert row["value"] < row["baseline_value"] - 0.01


@pytest.mark.cudasim
def test_cuda_kernels_give_the_same_fit():
    """The whole fit on the numba.cuda kernels (a GPU, or NUMBA_ENABLE_CUDASIM=1) matches the
    Numba fit; skipped where neither is available."""
    from subspacelab.kernels import available_backends, kernel_backend

    if "cuda" not in available_backends():
        pytest.skip("no CUDA device and NUMBA_ENABLE_CUDASIM is not set")
    X, M = _problem(16, 12, 1, 6.0, 0)
    ref = AltMinCompleter(rank=1, n_iter=8, tol=0.0, center="biases", random_state=0)
    got = AltMinCompleter(rank=1, n_iter=8, tol=0.0, center="biases", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref_out = ref.fit_transform(X)
        with kernel_backend("cuda"):
            got_out = got.fit_transform(X)
    np.testing.assert_allclose(got_out, ref_out, rtol=1e-10, atol=1e-10)
