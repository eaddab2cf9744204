"""masked_normal_eq: every implementation against the generic one, and against the maths."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st

from subspacelab.kernels import available_backends, masked_normal_eq
from subspacelab.kernels._bucketed import bucket_layout


def _problem(seed, n_groups, n_feat, k, density, dtype=np.float64):
    rng = np.random.default_rng(seed)
    A = sp.random(n_groups, n_feat, density=density, random_state=rng, format="csr", dtype=np.float64)
    F = rng.standard_normal((n_feat, k))
    x0 = rng.standard_normal((n_groups, k))
    return A.indptr.astype(np.int64), A.indices.astype(np.int64), A.data.astype(dtype), F.astype(dtype), x0.astype(dtype)


def _reference(indptr, indices, data, F, ridge):
    """Dense per-group ridge solutions with numpy.linalg (the mathematical definition)."""
    k = F.shape[1]
    out = np.zeros((indptr.size - 1, k))
    for g in range(indptr.size - 1):
        sl = slice(indptr[g], indptr[g + 1])
        A = F[indices[sl]].astype(np.float64)
        out[g] = np.linalg.solve(A.T @ A + ridge * np.eye(k), A.T @ data[sl])
    return out


@pytest.mark.parametrize("impl", available_backends())
@given(
    seed=st.integers(0, 2**31 - 1),
    n_groups=st.integers(0, 7),
    n_feat=st.integers(1, 9),
    k=st.integers(1, 4),
    density=st.sampled_from([0.2, 0.6, 1.0]),
    ridge=st.sampled_from([1e-2, 0.5, 3.0]),
    method=st.sampled_from(["exact", "cg", "sketch"]),
    dtype=st.sampled_from([np.float64, np.float32]),
)
def test_every_backend_matches_generic(impl, seed, n_groups, n_feat, k, density, ridge, method, dtype):
    indptr, indices, data, F, x0 = _problem(seed, n_groups, n_feat, k, density, dtype)
    kw = dict(method=method, x0=None if method == "exact" else x0, n_steps=2, sketch_size=2, seed=7)
    ref = masked_normal_eq(indptr, indices, data, F, ridge, backend="generic", **kw)
    got = masked_normal_eq(indptr, indices, data, F, ridge, backend=impl, **kw)
    assert got.dtype == F.dtype and got.shape == (n_groups, k)
    rtol = 1e-9 if dtype == np.float64 else 2e-3
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * (1 + np.abs(ref).max(initial=0)))


@pytest.mark.parametrize("impl", available_backends())
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 4), ridge=st.sampled_from([0.0, 1e-3, 1.0]))
def test_exact_solves_the_normal_equations(impl, seed, k, ridge):
    # every group observes every feature, so A_g has full column rank even without a ridge
    indptr, indices, data, F, _ = _problem(seed, 5, 8, k, 1.0)
    got = masked_normal_eq(indptr, indices, data, F, ridge, backend=impl)
    np.testing.assert_allclose(got, _reference(indptr, indices, data, F, ridge), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("impl", available_backends())
@pytest.mark.parametrize("k", [1, 3, 5])
def test_cg_is_exact_after_k_steps(impl, k):
    """Spec A.8.9(d): CG on a k x k SPD system is exact in k steps (to rounding)."""
    indptr, indices, data, F, _ = _problem(3, 6, 12, k, 1.0)
    got = masked_normal_eq(indptr, indices, data, F, 0.0, method="cg", n_steps=k, tol=0.0, backend=impl)
    ref = _reference(indptr, indices, data, F, 0.0)
    assert np.linalg.norm(got - ref) <= 1e-8 * np.linalg.norm(ref)


@pytest.mark.parametrize("impl", available_backends())
def test_sketch_preconditioned_solve_converges_to_least_squares(impl):
    """Spec A.8.9(a): run long enough, the sketched solver reaches the lstsq answer (1e-10).

    Groups have 300 observations and the sketch 40 = 4k rows, so the sketch branch (not the
    exact fallback) runs, from the sketch-and-solve start, on an ill-conditioned factor
    (column scales 1 ... 1e3, k = 10).
    """
    rng = np.random.default_rng(1)
    n_feat, k = 300, 10
    F = rng.standard_normal((n_feat, k)) * np.logspace(0, 3, k)
    indptr = np.arange(0, 4 * n_feat + 1, n_feat, dtype=np.int64)
    indices = np.tile(np.arange(n_feat, dtype=np.int64), 4)
    data = rng.standard_normal(4 * n_feat)
    ref = np.stack([np.linalg.lstsq(F, data[indptr[g] : indptr[g + 1]], rcond=None)[0] for g in range(4)])
    got = masked_normal_eq(indptr, indices, data, F, 0.0, method="sketch", n_steps=60, tol=0.0, backend=impl)
    assert np.linalg.norm(got - ref) <= 1e-10 * np.linalg.norm(ref)
    # the preconditioner is what makes a few steps enough: 6 steps of plain CG make no progress
    # (relative error ~1) while 6 preconditioned steps gain two orders of magnitude
    plain = masked_normal_eq(indptr, indices, data, F, 0.0, method="cg", n_steps=6, tol=0.0, backend=impl)
    sk = masked_normal_eq(indptr, indices, data, F, 0.0, method="sketch", n_steps=6, tol=0.0, backend=impl)
    assert np.linalg.norm(plain - ref) > 0.5 * np.linalg.norm(ref)
    assert np.linalg.norm(sk - ref) < 0.02 * np.linalg.norm(ref)


@pytest.mark.parametrize("impl", available_backends())
def test_empty_and_underdetermined_groups_are_finite(impl):
    """A group with no observation gets 0; one with fewer than k gets a finite answer."""
    F = np.random.default_rng(0).standard_normal((5, 3))
    indptr = np.array([0, 0, 1, 3], dtype=np.int64)
    indices = np.array([2, 0, 4], dtype=np.int64)
    data = np.array([1.0, 2.0, -1.0])
    for method in ("exact", "cg", "sketch"):
        got = masked_normal_eq(indptr, indices, data, F, 0.0, method=method, backend=impl)
        assert np.all(np.isfinite(got))
        np.testing.assert_array_equal(got[0], 0.0)
        # the fit interpolates the observations of an under-determined group
        np.testing.assert_allclose(F[indices[1:3]] @ got[2], data[1:3], atol=1e-8)


def test_namespace_and_device_follow_the_input(backend):
    indptr, indices, data, F, x0 = _problem(0, 6, 7, 3, 0.7)
    ref = masked_normal_eq(indptr, indices, data, F, 0.3, method="cg", x0=x0)
    args = [backend.asarray(a) for a in (indptr, indices, data, F, x0)]
    got = masked_normal_eq(*args[:4], 0.3, method="cg", x0=args[4])
    from array_api_compat import array_namespace, device

    assert array_namespace(got) is array_namespace(args[3])
    assert device(got) == device(args[3])
    np.testing.assert_allclose(backend.to_numpy(got), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("impl", available_backends())
@pytest.mark.parametrize("method", ["exact", "cg", "sketch"])
def test_per_group_ridge_equals_separate_calls(impl, method):
    """A ridge array (one lambda per group, as ALS-WR uses) solves each group with its own."""
    indptr, indices, data, F, _ = _problem(4, 5, 6, 2, 1.0)
    lam = np.array([0.1, 1.0, 2.0, 0.0, 5.0])
    got = masked_normal_eq(indptr, indices, data, F, lam, method=method, n_steps=10, tol=0.0, sketch_size=3, backend=impl)
    for g in range(5):
        np.testing.assert_allclose(got[g], _reference(indptr, indices, data, F, lam[g])[g], rtol=1e-9)
    with pytest.raises(ValueError, match="ridge must be non-negative"):
        masked_normal_eq(indptr, indices, data, F, -lam, backend=impl)
    with pytest.raises(ValueError, match=r"array of shape \(5,\)"):
        masked_normal_eq(indptr, indices, data, F, lam[:3], backend=impl)


def test_layout_bounds_padding_and_chunk_size():
    rng = np.random.default_rng(0)
    deg = rng.integers(0, 50, size=200)
    indptr = np.concatenate([[0], np.cumsum(deg)]).astype(np.int64)
    indices = rng.integers(0, 30, size=indptr[-1]).astype(np.int64)
    import array_api_compat.numpy as xp

    lay = bucket_layout(indptr, indices, xp, "cpu", max_slots=256)
    padded = sum(ch.size * ch.width for ch in lay.chunks)
    assert padded <= 2 * indices.size + 200
    assert all(ch.size * ch.width <= 256 or ch.size == 1 for ch in lay.chunks)
    order = np.concatenate([np.asarray(ch.groups) for ch in lay.chunks])
    np.testing.assert_array_equal(np.sort(order), np.arange(200))
    np.testing.assert_array_equal(order[np.asarray(lay.inverse)], np.arange(200))
    lay_s = bucket_layout(indptr, indices, xp, "cpu", split_at=20)
    for ch in lay_s.chunks:
        assert np.all(ch.degrees <= 20) or np.all(ch.degrees > 20)


@pytest.mark.parametrize(
    "mutate, err, match",
    [
        (lambda a: {**a, "indptr": a["indptr"].astype(float)}, TypeError, "indptr must have an integer dtype"),
        (lambda a: {**a, "data": a["data"][:-1]}, ValueError, "same length"),
        (lambda a: {**a, "indices": a["indices"] + 100}, ValueError, "indices must lie in"),
        (lambda a: {**a, "indptr": a["indptr"][::-1].copy()}, ValueError, "indptr must start at 0"),
        (lambda a: {**a, "ridge": -1.0}, ValueError, "ridge must be in"),
        (lambda a: {**a, "method": "lu"}, ValueError, "method must be one of"),
        (lambda a: {**a, "data": np.full_like(a["data"], np.nan)}, ValueError, "must be finite"),
        (lambda a: {**a, "factors": a["factors"][:, :, None]}, TypeError, "factors must be a 2-D"),
        (lambda a: {**a, "x0": np.zeros((2, 2)), "method": "cg"}, ValueError, "x0 must have shape"),
        (lambda a: {**a, "indices": list(a["indices"])}, TypeError, "indices must be an array"),
    ],
)
def test_bad_input_is_named(mutate, err, match):
    indptr, indices, data, F, _ = _problem(0, 4, 5, 2, 1.0)
    args = mutate(dict(indptr=indptr, indices=indices, data=data, factors=F, ridge=0.1, method="exact"))
    ridge, method = args.pop("ridge"), args.pop("method")
    with pytest.raises(err, match=match):
        masked_normal_eq(args.pop("indptr"), args.pop("indices"), args.pop("data"), args.pop("factors"), ridge, method=method, **args)
