"""MCR2Clusterer (MLC): spec §2.5 invariants, exact recovery, API behaviour, bad input."""

import math
import warnings

import numpy as np
import pytest
import sklearn
from hypothesis import given
from hypothesis import strategies as st
from sklearn.exceptions import ConvergenceWarning

from subspacelab import MCR2Clusterer
from subspacelab.datasets import make_union_of_subspaces
from subspacelab.estimators.mcr2 import (
    _Affinity,
    _chunked_sinkhorn_potentials,
    _best_moves,
    _compressed_rate,
    _hard_rate_terms,
    _refine_labels,
    _SpectralEmbedding,
)
from subspacelab.kernels import sinkhorn, weighted_logdet
from subspacelab.metrics import clustering_accuracy
from subspacelab.rate import coding_rate, compressed_coding_rate

# Small settings that keep a network fit to a fraction of a second.
SMALL_NET = dict(feature_dim=8, hidden_dim=32, n_epochs=5, batch_size=64, warmup_steps=5)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Torch's intra-op threads oversubscribe the shared CI cores; one is much faster here."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def separated(n_per=20, dims=(2, 2, 2), ambient=12, seed=0):
    """Well-separated union of linear subspaces (independent, little noise)."""
    return make_union_of_subspaces(n_per, dims, ambient, noise=0.01, shuffle=True, random_state=seed)[:2]


def unit_rows(rng, n, d):
    Z = rng.normal(size=(n, d))
    return Z / np.linalg.norm(Z, axis=1, keepdims=True)


# ------------------------------------------------------------------------------------------
# spec §2.5: the membership and the MLC compressed rate


def test_membership_is_doubly_stochastic_and_positive_on_every_backend(backend):
    X, _ = separated(8)
    est = MCR2Clusterer(
        3, solver="membership", sinkhorn_eta=0.5, sinkhorn_n_iter=2000, sinkhorn_tol=1e-11, max_iter=3, tol=0.0
    )
    with sklearn.config_context(array_api_dispatch=True), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        Xb = backend.asarray(X)
        est.fit(Xb)
        gamma = est.membership(Xb)
    assert type(gamma) is type(Xb)
    G = backend.to_numpy(gamma)
    assert np.all(G > 0)
    np.testing.assert_allclose(G.sum(axis=1), 1.0, atol=1e-10)
    np.testing.assert_allclose(G.sum(axis=0), 1.0, atol=1e-10)
    frob = float(np.sum(G * G))
    assert 1.0 - 1e-9 <= frob <= G.shape[0]  # spec §2.5.10


def test_network_membership_is_symmetric_at_convergence():
    X, _ = separated(10)
    est = MCR2Clusterer(3, random_state=0, **SMALL_NET).fit(X)
    est.set_params(sinkhorn_n_iter=5000, sinkhorn_tol=1e-12)  # membership() reads them at call time
    G = est.membership(X)
    np.testing.assert_allclose(G, G.T, atol=1e-10)  # symmetric |CC^T| -> symmetric Gamma
    np.testing.assert_allclose(G.sum(axis=0), 1.0, atol=1e-11)


def test_official_five_half_iterations_rows_exact():
    X, _ = separated(10)
    est = MCR2Clusterer(3, random_state=0, **SMALL_NET).fit(X)
    G = est.membership(X)
    np.testing.assert_allclose(G.sum(axis=1), 1.0, atol=1e-12)


def test_membership_is_permutation_equivariant(rng):
    X, _ = separated(8)
    p = rng.permutation(X.shape[0])
    est = MCR2Clusterer(
        3, solver="membership", sinkhorn_eta=0.5, sinkhorn_n_iter=2000, sinkhorn_tol=1e-11, max_iter=3, tol=0.0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X)
        G = est.membership(X)
        Gp = est.membership(X[p])
    np.testing.assert_allclose(Gp, G[np.ix_(p, p)], atol=1e-9)


@pytest.mark.parametrize("solver", ["network", "membership"])
def test_temperature_limits(solver):
    """eta -> inf: Gamma -> 11^T/n and Delta R -> 0; eta -> 0: Gamma -> I (MLC's collapse)."""
    X, _ = separated(8)
    n = X.shape[0]
    kw = SMALL_NET if solver == "network" else dict(max_iter=1, tol=1.0)
    est = MCR2Clusterer(3, solver=solver, random_state=0, **kw).fit(X)
    # membership() and score() use the Sinkhorn settings current at call time
    est.set_params(sinkhorn_eta=1e4, sinkhorn_n_iter=200, sinkhorn_tol=1e-10)
    np.testing.assert_allclose(est.membership(X), 1.0 / n, atol=1e-3)
    assert abs(est.score(X)) < 1e-2
    dist = []
    for eta in (1e-1, 1e-2, 1e-3):
        G = est.set_params(sinkhorn_eta=eta).membership(X)
        dist.append(np.abs(G - np.eye(n)).max())
    assert dist[0] > dist[1] > dist[2]
    assert np.median(np.diag(G)) > 0.999


def test_mlc_rate_identities_on_every_backend(backend, rng):
    n, d, eps_sq = 12, 4, 0.5
    Z = unit_rows(rng, n, d)
    labels = np.repeat(np.arange(3), 4)
    block = (labels[:, None] == labels[None, :]) / 4.0
    xp = backend.xp
    Zb = backend.asarray(Z)
    rc_block = float(_compressed_rate(Zb, backend.asarray(block), eps_sq))
    assert rc_block == pytest.approx(float(compressed_coding_rate(Z, labels, eps_sq=eps_sq)), rel=1e-12)
    rc_unif = float(_compressed_rate(Zb, backend.asarray(np.full((n, n), 1.0 / n)), eps_sq))
    assert rc_unif == pytest.approx(float(coding_rate(Z, eps_sq=eps_sq)), rel=1e-12)
    rc_eye = float(_compressed_rate(Zb, xp.eye(n, dtype=xp.float64, device=backend.device), eps_sq))
    assert rc_eye == pytest.approx(0.5 * math.log(1 + d / eps_sq), rel=1e-12)


@given(seed=st.integers(0, 10**6), n=st.integers(2, 10), d=st.integers(1, 5), eta=st.floats(0.05, 5.0))
def test_rate_reduction_nonnegative_and_relabelling_equivariant(seed, n, d, eta):
    rng = np.random.default_rng(seed)
    Z = unit_rows(rng, n, d)
    gamma = sinkhorn(rng.normal(size=(n, n)), eta, n_iter=2000, tol=1e-10).plan
    rc = float(_compressed_rate(Z, gamma, 0.3))
    assert float(coding_rate(Z, eps_sq=0.3)) - rc >= -1e-10  # spec §2.5.8
    p = rng.permutation(n)
    assert float(_compressed_rate(Z[p], gamma[np.ix_(p, p)], 0.3)) == pytest.approx(rc, rel=1e-10)


def test_membership_gradient_matches_finite_differences(backend, rng):
    """d/dGamma_ij of sum_j 1/(2n) logdet(I + beta Z^T diag(Gamma_j) Z) = beta/(2n) q_ij."""
    n, d, eps_sq = 6, 3, 0.4
    beta = d / eps_sq
    Z = unit_rows(rng, n, d)
    G = sinkhorn(rng.normal(size=(n, n)), 1.0, tol=1e-12).plan

    def f(Gm):
        return float(np.sum(weighted_logdet(Z, Gm, beta).logdet)) / (2 * n)

    res = weighted_logdet(backend.asarray(Z), backend.asarray(G), beta, return_quadratic=True)
    grad = beta / (2 * n) * backend.to_numpy(res.quadratic)
    h = 1e-6
    for i, j in [(0, 0), (2, 5), (4, 1)]:
        E = np.zeros((n, n))
        E[i, j] = h
        assert (f(G + E) - f(G - E)) / (2 * h) == pytest.approx(grad[i, j], rel=1e-6)


def test_network_loss_gradient_is_torch_autograd_of_the_rates(rng):
    import torch

    Z = torch.tensor(unit_rows(rng, 7, 3), requires_grad=True)
    G = torch.tensor(sinkhorn(rng.normal(size=(7, 7)), 0.5, n_iter=5, tol=None).plan)
    _compressed_rate(Z, G, 0.2, backend="generic").backward()
    Z2 = Z.detach().clone().requires_grad_(True)
    compressed_coding_rate(Z2, G, eps_sq=0.2).backward()
    np.testing.assert_allclose(Z.grad.numpy(), Z2.grad.numpy(), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------------------
# spectral clustering of Gamma


@pytest.mark.parametrize("sizes", [(5, 7, 9), (400, 350, 300)])
def test_block_diagonal_membership_gives_exact_labels(sizes, rng):
    labels = np.repeat(np.arange(len(sizes)), sizes)
    p = rng.permutation(labels.size)
    labels = labels[p]
    block = (labels[:, None] == labels[None, :]) / np.bincount(labels)[labels][None, :]
    emb = _SpectralEmbedding(_Affinity.dense(block), np.random.default_rng(0))
    pred = emb.labels(len(sizes), 10, np.random.default_rng(0))
    assert clustering_accuracy(labels, pred) == 1.0


def test_chunked_potentials_match_the_sinkhorn_kernel(rng):
    C = unit_rows(rng, 23, 4)
    A = np.abs(C @ C.T)
    for n_iter, tol in [(5, None), (4, None), (500, 1e-10)]:
        ref = sinkhorn(A, 0.3, n_iter=n_iter, tol=tol)
        aff = _Affinity.from_embedding(C, 0.3, n_iter, tol, chunk=5)
        np.testing.assert_allclose(aff.matvec(np.eye(23)), ref.plan, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(aff.rmatvec(np.eye(23)), ref.plan.T, rtol=1e-10, atol=1e-14)
        f, g = _chunked_sinkhorn_potentials(C, 0.3, n_iter, tol, 7)
        np.testing.assert_allclose(f * 0.3, ref.row_potential, atol=1e-10)


# ------------------------------------------------------------------------------------------
# exact recovery, prediction, reproducibility


def test_membership_solver_recovers_separated_subspaces_on_every_backend(backend):
    X, y = separated(20)
    est = MCR2Clusterer(3, solver="membership", max_iter=10, random_state=0)
    with sklearn.config_context(array_api_dispatch=True), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        Xb = backend.asarray(X)
        labels = est.fit_predict(Xb)
        assert type(labels) is type(Xb) and type(est.embedding_) is type(Xb)
        assert clustering_accuracy(y, backend.to_numpy(labels)) == 1.0
        pred = est.predict(Xb)
        np.testing.assert_array_equal(backend.to_numpy(pred), backend.to_numpy(labels))
    assert est.n_iter_ >= 1 and len(est.loss_curve_) == est.n_iter_ and len(est.rates_) == est.n_iter_


@pytest.mark.slow
def test_network_solver_linearizes_and_recovers_warped_subspaces():
    """Three warped 3-dim subspaces of R^30: the trained network separates them exactly.

    A regression test at fixed seeds (the network solver is sensitive to its configuration:
    a wider trunk with larger batches reached only ACC 0.5-0.6 on this data)."""
    X, y = make_union_of_subspaces(60, (3, 3, 3), 30, noise=0.01, warp=0.5, shuffle=True, random_state=0)[:2]
    est = MCR2Clusterer(3, feature_dim=16, hidden_dim=64, n_epochs=40, batch_size=60, random_state=0).fit(X)
    assert clustering_accuracy(y, est.labels_) == 1.0
    assert est.embedding_.shape == (180, 16)
    np.testing.assert_allclose(np.linalg.norm(est.transform(X), axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(est.predict(X), est.labels_)
    assert len(est.loss_curve_) == est.n_iter_ == 40 * 3 and len(est.rates_) == 40 * 3
    r0, rc0 = est.rates_[0]
    r1, rc1 = est.rates_[-1]
    assert r1 - rc1 > r0 - rc0  # training increased the rate reduction


def test_network_solver_bookkeeping():
    X, _ = separated(40)
    est = MCR2Clusterer(3, random_state=0, **SMALL_NET).fit(X)
    assert est.embedding_.shape == (120, 8) and est.labels_.shape == (120,)
    np.testing.assert_allclose(np.linalg.norm(est.transform(X), axis=1), 1.0, rtol=1e-12)
    assert len(est.loss_curve_) == est.n_iter_ == 5 + 5 * (120 // 64)
    assert len(est.rates_) == 5 * (120 // 64)
    assert set(np.unique(est.predict(X))) <= set(range(3))


@pytest.mark.parametrize("name", ["torch-cpu", "array_api_strict-cpu"])
def test_network_solver_same_fit_on_every_backend(name):
    from tests.conftest import _make_backend

    backend = _make_backend(name)
    X, _ = separated(10)
    ref = MCR2Clusterer(3, random_state=0, **SMALL_NET).fit(X)
    with sklearn.config_context(array_api_dispatch=True):
        est = MCR2Clusterer(3, random_state=0, **SMALL_NET).fit(backend.asarray(X))
        Z = est.transform(backend.asarray(X))
    assert type(Z) is type(backend.asarray(X))
    np.testing.assert_allclose(backend.to_numpy(Z), ref.transform(X), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(backend.to_numpy(est.labels_), ref.labels_)


def test_float32_stays_float32():
    X, _ = separated(10)
    est = MCR2Clusterer(3, random_state=0, **SMALL_NET).fit(X.astype(np.float32))
    assert est.transform(X.astype(np.float32)).dtype == np.float32


def test_estimate_n_clusters_by_coding_length():
    X, y = separated(30, dims=(2, 2, 2, 2), ambient=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = MCR2Clusterer(None, solver="membership", max_iter=5, random_state=0, n_clusters_candidates=(2, 3, 4, 6, 8))
        est.fit(X)
        assert est.n_clusters_ == 4
        assert clustering_accuracy(y, est.labels_) == 1.0
        assert est.estimate_n_clusters(X, candidates=[2, 4, 8]) == 4
        # the refinement acts on the selected number of clusters
        refined = MCR2Clusterer(
            None, solver="membership", max_iter=5, refine_max_iter=50, refine_n_init=3, random_state=0,
            n_clusters_candidates=(2, 3, 4, 6, 8),
        ).fit(X)
        assert refined.n_clusters_ == 4 and clustering_accuracy(y, refined.labels_) == 1.0


def test_score_is_rate_reduction():
    X, _ = separated(10)
    est = MCR2Clusterer(3, solver="membership", max_iter=2, tol=1.0).fit(X)
    Z, G = est.transform(X), est.membership(X)
    expected = float(coding_rate(Z, eps_sq=0.1)) - float(compressed_coding_rate(Z, G, eps_sq=0.1))
    assert est.score(X) == pytest.approx(expected, rel=1e-10)
    assert est.score(X) > 0


def test_membership_solver_decreases_its_objective():
    X, _ = make_union_of_subspaces(15, (2, 2, 2), 10, noise=0.1, warp=0.5, random_state=4)[:2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = MCR2Clusterer(3, solver="membership", max_iter=8, step_size=0.5, sinkhorn_n_iter=200, sinkhorn_tol=1e-10).fit(X)
    assert est.loss_curve_[-1] < est.loss_curve_[0]


def test_reproducible_with_a_seed():
    X, _ = separated(10)
    a = MCR2Clusterer(3, random_state=3, **SMALL_NET).fit(X)
    b = MCR2Clusterer(3, random_state=3, **SMALL_NET).fit(X)
    np.testing.assert_array_equal(a.transform(X), b.transform(X))
    assert a.loss_curve_ == b.loss_curve_


def test_verbose_and_convergence_warning(capsys):
    X, _ = separated(10)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        MCR2Clusterer(3, solver="membership", max_iter=1, tol=0.0, verbose=1).fit(X)
    MCR2Clusterer(3, random_state=0, verbose=1, **SMALL_NET).fit(X)
    out = capsys.readouterr().out
    assert "iteration 1" in out and "epoch 5/5" in out and "warm-up" in out


# ------------------------------------------------------------------------------------------
# rate-reduction refinement of the labels


def _labels_rc(Z, labels, eps_sq):
    return float(compressed_coding_rate(Z, labels, eps_sq=eps_sq))


@given(seed=st.integers(0, 2**31 - 1), k=st.integers(2, 4), eps_sq=st.sampled_from([0.05, 0.5]))
def test_best_moves_are_the_exact_changes_of_the_compressed_rate(seed, k, eps_sq):
    """The determinant-lemma changes equal brute-force R^c(moved) - R^c(labels), every move."""
    rng = np.random.default_rng(seed)
    n, d = 12, 4
    Z = unit_rows(rng, n, d)
    labels = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])
    base = _labels_rc(Z, labels, eps_sq)
    state = _hard_rate_terms(Z, labels, k, d / eps_sq)
    assert float(np.sum(state[4])) == pytest.approx(base, rel=1e-12)
    best, change = _best_moves(Z, labels, state, d / eps_sq, chunk=5)
    sizes = np.bincount(labels, minlength=k)
    for i in range(n):
        exact = []
        for j in range(k):
            if j == labels[i] or sizes[labels[i]] == 1:
                exact.append(math.inf)
                continue
            moved = labels.copy()
            moved[i] = j
            exact.append(_labels_rc(Z, moved, eps_sq) - base)
        if math.isinf(min(exact)):
            assert math.isinf(change[i])
        else:
            assert change[i] == pytest.approx(min(exact), rel=1e-8, abs=1e-12)
            assert exact[best[i]] == pytest.approx(min(exact), rel=1e-8, abs=1e-12)


@given(seed=st.integers(0, 2**31 - 1), k=st.integers(2, 5))
def test_refinement_never_raises_the_compressed_rate_and_ends_at_a_fixed_point(seed, k):
    rng = np.random.default_rng(seed)
    n, d, eps_sq = 40, 6, 0.1
    Z = unit_rows(rng, n, d)
    start = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])
    labels, rounds, rc, converged = _refine_labels(Z, start, k, eps_sq, max_iter=500, chunk=16)
    assert rc == pytest.approx(_labels_rc(Z, labels, eps_sq), rel=1e-10)
    assert converged and rounds <= 500
    assert _labels_rc(Z, labels, eps_sq) <= _labels_rc(Z, start, eps_sq) + 1e-12
    assert np.all(np.bincount(labels, minlength=k) >= 1)  # no cluster vanishes
    _, change = _best_moves(Z, labels, _hard_rate_terms(Z, labels, k, d / eps_sq), d / eps_sq, chunk=16)
    assert np.all(change >= -1e-12 * max(1.0, _labels_rc(Z, labels, eps_sq)))


def test_refinement_recovers_a_union_of_subspaces_from_random_labels():
    """Exact recovery: for independent subspaces with little noise the label-block R^c is
    minimal at the true partition and the greedy descent reaches it from random labels."""
    X, y = make_union_of_subspaces(40, (3, 3, 3, 3), 20, noise=0.01, random_state=2)[:2]
    Z = X / np.linalg.norm(X, axis=1, keepdims=True)
    for seed in range(3):
        start = np.random.default_rng(seed).integers(0, 4, Z.shape[0])
        labels, _, _, converged = _refine_labels(Z, start, 4, 0.1, max_iter=200, chunk=64)
        assert converged
        assert clustering_accuracy(y, labels) == 1.0


def test_refinement_may_fill_an_empty_cluster_and_never_empties_one():
    X, y = make_union_of_subspaces(40, (3, 3, 3, 3), 20, noise=0.01, random_state=2)[:2]
    Z = X / np.linalg.norm(X, axis=1, keepdims=True)
    start = np.random.default_rng(0).integers(0, 3, Z.shape[0])  # cluster 3 starts empty
    labels, _, _, converged = _refine_labels(Z, start, 4, 0.1, max_iter=200, chunk=64)
    assert converged and clustering_accuracy(y, labels) == 1.0
    labels, rounds, _, converged = _refine_labels(Z, np.zeros(160, dtype=np.int64), 1, 0.1, max_iter=5, chunk=64)
    assert converged and rounds == 0 and np.all(labels == 0)  # one cluster: nothing to move


def test_refinement_same_on_every_backend(backend):
    X, _ = make_union_of_subspaces(15, (2, 2, 2), 8, noise=0.2, warp=0.5, random_state=5)[:2]
    Z = X / np.linalg.norm(X, axis=1, keepdims=True)
    start = np.random.default_rng(0).integers(0, 3, Z.shape[0])
    ref, ref_rounds, _, _ = _refine_labels(Z, start, 3, 0.1, max_iter=100, chunk=16)
    labels, rounds, _, converged = _refine_labels(
        backend.asarray(Z), backend.asarray(start), 3, 0.1, max_iter=100, chunk=16
    )
    assert converged and rounds == ref_rounds
    np.testing.assert_array_equal(backend.to_numpy(labels), ref)


def test_estimator_refinement_on_overlapping_warped_subspaces():
    """Regression at a fixed seed: eight overlapping, warped, noisy 5-dim subspaces of R^30
    (the benchmark's hard generator on another draw): the membership solver's spectral labels
    are poor, the refinement from them improves them, and restarts from random labelings
    (kept by the smallest R^c, not by accuracy) reach nearly the true partition."""
    X, y = make_union_of_subspaces(80, (5,) * 8, 30, overlap=0.7, warp=2.0, noise=0.1, random_state=7)[:2]
    common = dict(solver="membership", eps_sq=0.5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        plain = MCR2Clusterer(8, **common).fit(X)  # refine_max_iter=0 by default: the paper's labels
        refined = MCR2Clusterer(8, refine_max_iter=100, **common).fit(X)
        restarted = MCR2Clusterer(8, refine_max_iter=100, refine_n_init=10, **common).fit(X)
    assert plain.refine_n_iter_ == 0 and refined.refine_n_iter_ >= 1
    acc = [clustering_accuracy(y, e.labels_) for e in (plain, refined, restarted)]
    assert acc[0] < 0.4 and acc[1] > acc[0] + 0.2 and acc[2] >= 0.9
    Z = plain.embedding_
    rc = [_labels_rc(Z, e.labels_, 0.5) for e in (plain, refined, restarted)]
    assert rc[2] <= rc[1] < rc[0]
    # predict (nearest subspace) agrees with the refined labels away from the boundaries
    assert np.mean(restarted.predict(X) == restarted.labels_) >= 0.9


def test_refinement_convergence_warning():
    X, _ = make_union_of_subspaces(20, (3,) * 4, 20, overlap=0.7, warp=2.0, noise=0.1, random_state=7)[:2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        full = MCR2Clusterer(4, solver="membership", max_iter=2, refine_max_iter=100, random_state=0).fit(X)
    assert full.refine_n_iter_ >= 2
    with pytest.warns(ConvergenceWarning, match="refine_max_iter=1"):
        MCR2Clusterer(4, solver="membership", max_iter=2, tol=1.0, refine_max_iter=1, random_state=0).fit(X)


# ------------------------------------------------------------------------------------------
# bad input


def test_bad_input():
    X, _ = separated(3)
    with pytest.raises(ValueError, match="n_clusters=10 needs at least as many samples"):
        MCR2Clusterer(10, solver="membership").fit(X)
    with pytest.raises(ValueError, match="n_clusters"):
        MCR2Clusterer(0).fit(X)
    with pytest.raises(ValueError, match="NaN"):
        MCR2Clusterer(2).fit(np.where(np.eye(*X.shape) > 0, np.nan, X))
    with pytest.raises(ValueError, match="solver"):
        MCR2Clusterer(2, solver="adam").fit(X)
    with pytest.raises(ValueError, match="eps_sq"):
        MCR2Clusterer(2, eps_sq=0.0).fit(X)
    with pytest.raises(ValueError, match="n_clusters_candidates"):
        MCR2Clusterer(None, n_clusters_candidates=(50,)).fit(X)
    with pytest.raises(ValueError, match="at least 2 samples"):
        MCR2Clusterer(1).fit(X[:1])
    with pytest.raises(ValueError, match="refine_max_iter"):
        MCR2Clusterer(2, refine_max_iter=-1).fit(X)


def test_predict_on_another_namespace_is_refused():
    import torch

    X, _ = separated(10)
    with sklearn.config_context(array_api_dispatch=True):
        est = MCR2Clusterer(3, solver="membership", max_iter=2, tol=1.0).fit(X)
        with pytest.raises(ValueError, match="same namespace"):
            est.predict(torch.asarray(X))


# ------------------------------------------------------------------------------------------
# several networks (n_networks)


def test_several_networks_average_their_memberships():
    X, y = separated(20)
    one = [MCR2Clusterer(3, random_state=s, **SMALL_NET).fit(X) for s in (0,)]
    est = MCR2Clusterer(3, n_networks=3, random_state=0, **SMALL_NET).fit(X)
    assert len(est.networks_) == 3 and len(one[0].networks_) == 1
    # the first network is the single-network fit of the same seed
    np.testing.assert_array_equal(one[0].loss_curve_, est.loss_curve_[: len(one[0].loss_curve_)])
    assert est.n_iter_ == len(est.loss_curve_) == 3 * len(one[0].loss_curve_)
    # representation: the networks' unit-norm features concatenated, scaled to unit norm
    Z = est.transform(X)
    assert Z.shape == (60, 3 * SMALL_NET["feature_dim"])
    np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(Z[:, : SMALL_NET["feature_dim"]] * math.sqrt(3), one[0].transform(X), rtol=1e-10, atol=1e-12)
    # membership: the mean of the networks' doubly stochastic memberships
    import torch

    parts = []
    for _, c in est._heads(X):
        c = c.numpy()
        parts.append(sinkhorn(np.abs(c @ c.T), est.sinkhorn_eta, est.sinkhorn_n_iter).plan)
    np.testing.assert_allclose(est.membership(X), np.mean(parts, axis=0), rtol=1e-10)
    np.testing.assert_allclose(est.membership(X).sum(axis=1), 1.0, rtol=1e-10)
    # the labels are the spectral clustering of that mean (dense and chunked operators agree)
    dense = _Affinity.dense(np.mean(parts, axis=0))
    chunked = est._network_affinity(est._heads(X))
    v = np.random.default_rng(0).normal(size=(60, 2))
    np.testing.assert_allclose(chunked.matvec(v), dense.matvec(v), rtol=1e-9)
    np.testing.assert_allclose(chunked.rmatvec(v), dense.rmatvec(v), rtol=1e-9)
    rng = np.random.default_rng(5)
    from_dense = _SpectralEmbedding(dense, rng).labels(3, 10, rng)
    assert clustering_accuracy(from_dense, est.labels_) == 1.0  # same partition
    assert torch.is_tensor(next(est.networks_[2].parameters()))


def test_n_networks_must_be_positive():
    X, _ = separated(5)
    with pytest.raises(ValueError, match="n_networks"):
        MCR2Clusterer(3, n_networks=0).fit(X)
