"""Sinkhorn kernel: invariants of specs/rate_reduction.md section 2.5 and implementation equality."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from subspacelab.kernels import available_backends, kernel_backend, sinkhorn

pytestmark = pytest.mark.cudasim

FLOATS = st.floats(-3, 3, allow_nan=False, width=64)


@st.composite
def square(draw, max_n=8):
    n = draw(st.integers(1, max_n))
    return draw(arrays(np.float64, (n, n), elements=FLOATS))


@st.composite
def rect(draw, max_n=7):
    n, m = draw(st.integers(1, max_n)), draw(st.integers(1, max_n))
    return draw(arrays(np.float64, (n, m), elements=FLOATS))


@pytest.mark.parametrize("impl", available_backends())
@given(a=rect(), eta=st.floats(0.2, 5.0), dtype=st.sampled_from([np.float64, np.float32]))
def test_every_implementation_equals_generic(impl, a, eta, dtype):
    a = a.astype(dtype)
    ref = sinkhorn(a, eta, backend="generic")
    got = sinkhorn(a, eta, backend=impl)
    tol = 1e-10 if dtype == np.float64 else 2e-4
    assert got.plan.dtype == dtype and got.row_potential.dtype == dtype
    np.testing.assert_allclose(got.plan, ref.plan, rtol=tol, atol=tol)
    np.testing.assert_allclose(got.row_potential, ref.row_potential, rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(got.col_potential, ref.col_potential, rtol=tol, atol=tol * 10)
    if dtype == np.float64:
        assert got.n_iter == ref.n_iter


@pytest.mark.parametrize("impl", available_backends())
def test_batched_and_fixed_iterations_match_generic(impl, rng):
    a = rng.normal(size=(2, 3, 5, 4))
    for kwargs in ({"n_iter": 5, "tol": None}, {"tol": 1e-12}):
        ref = sinkhorn(a, 0.3, **kwargs, backend="generic")
        got = sinkhorn(a, 0.3, **kwargs, backend=impl)
        assert got.plan.shape == (2, 3, 5, 4) and got.row_potential.shape == (2, 3, 5)
        np.testing.assert_allclose(got.plan, ref.plan, rtol=1e-11, atol=1e-13)
        assert got.n_iter == ref.n_iter
        assert got.marginal_error == pytest.approx(ref.marginal_error, rel=1e-6, abs=1e-14)


def test_doubly_stochastic_positive_on_every_backend(backend, rng):
    a = rng.normal(size=(3, 6, 6))
    res = sinkhorn(backend.asarray(a), 0.5, tol=1e-12)
    xp = backend.xp
    assert res.converged and res.marginal_error <= 1e-12
    assert type(res.plan) is type(backend.asarray(a))
    assert res.plan.dtype == xp.float64
    plan = backend.to_numpy(res.plan)
    assert np.all(plan > 0)
    np.testing.assert_allclose(plan.sum(-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(plan.sum(-2), 1.0, atol=1e-12)
    # plan is exp((A + f + g)/eta) with the returned potentials
    f, g = backend.to_numpy(res.row_potential), backend.to_numpy(res.col_potential)
    np.testing.assert_allclose(plan, np.exp((a + f[..., :, None] + g[..., None, :]) / 0.5), rtol=1e-12)


def test_device_is_kept(backend, rng):
    from subspacelab._backend import device

    x = backend.asarray(rng.normal(size=(4, 4)))
    assert device(sinkhorn(x, 1.0).plan) == device(x)


def test_official_five_half_iterations_rows_exact_columns_not(rng):
    a = np.abs(np.corrcoef(rng.normal(size=(30, 8))))
    res = sinkhorn(a, 0.175, n_iter=5, tol=None)
    assert res.n_iter == 5 and not res.converged
    np.testing.assert_allclose(res.plan.sum(1), 1.0, atol=1e-13)
    assert np.abs(res.plan.sum(0) - 1.0).max() > 1e-6
    res6 = sinkhorn(a, 0.175, n_iter=6, tol=None)
    np.testing.assert_allclose(res6.plan.sum(0), 1.0, atol=1e-13)


@given(a=square())
def test_symmetric_affinity_gives_symmetric_plan(a):
    s = a + a.T
    plan = sinkhorn(s, 0.7, tol=1e-13, n_iter=20000).plan
    np.testing.assert_allclose(plan, plan.T, atol=1e-10)


@given(a=square(), data=st.data())
def test_permutation_equivariance(a, data):
    n = a.shape[0]
    p = np.array(data.draw(st.permutations(range(n))))
    ref = sinkhorn(a, 0.6, tol=1e-13, n_iter=20000).plan
    got = sinkhorn(a[np.ix_(p, p)], 0.6, tol=1e-13, n_iter=20000).plan
    np.testing.assert_allclose(got, ref[np.ix_(p, p)], atol=1e-9)


@given(a=rect(), r=arrays(np.float64, 7, elements=FLOATS), c=arrays(np.float64, 7, elements=FLOATS))
def test_potential_shift_invariance(a, r, c):
    n, m = a.shape
    shifted = a + r[:n, None] + c[None, :m]
    ref = sinkhorn(a, 0.8, tol=1e-13, n_iter=20000).plan
    got = sinkhorn(shifted, 0.8, tol=1e-13, n_iter=20000).plan
    np.testing.assert_allclose(got, ref, atol=1e-9)


def test_rectangular_marginals(rng):
    a = rng.normal(size=(4, 6))
    plan = sinkhorn(a, 0.5, tol=1e-12).plan
    np.testing.assert_allclose(plan.sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(plan.sum(0), 4 / 6, atol=1e-12)


def test_temperature_limits(rng):
    c = rng.normal(size=(6, 3))
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    a = np.abs(c @ c.T)
    hot = sinkhorn(a, 1e4, tol=1e-12).plan
    np.testing.assert_allclose(hot, np.full((6, 6), 1 / 6), atol=1e-4)
    cold = sinkhorn(a, 0.01, tol=1e-10, n_iter=100000).plan
    np.testing.assert_allclose(cold, np.eye(6), atol=1e-3)


def test_worked_example_two_by_two():
    a = np.array([[1.0, 0.2], [0.2, 1.0]])
    plan = sinkhorn(a, 0.175).plan
    np.testing.assert_allclose(plan, [[0.98976, 0.01024], [0.01024, 0.98976]], atol=5e-6)
    assert plan[0, 0] / plan[0, 1] == pytest.approx(math.exp(0.8 / 0.175), rel=1e-12)


def test_torch_autograd_through_generic_path(rng):
    torch = pytest.importorskip("torch")
    a = torch.tensor(rng.normal(size=(5, 5)), requires_grad=True)
    w = torch.tensor(rng.normal(size=(5, 5)))

    def loss(x):
        return (sinkhorn(x, 0.5, n_iter=8, tol=None).plan * w).sum()

    assert torch.autograd.gradcheck(loss, (a,), eps=1e-6, atol=1e-6)


def test_forced_backend_context(rng):
    a = rng.normal(size=(3, 3))
    with kernel_backend("generic"):
        ref = sinkhorn(a, 1.0)
    np.testing.assert_allclose(sinkhorn(a, 1.0, backend="numba").plan, ref.plan, atol=1e-13)
    with pytest.raises(ValueError, match="backend"):
        sinkhorn(a, 1.0, backend="fortran")


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"log_affinity": np.array([1.0, 2.0])}, ValueError, "log_affinity"),
        ({"log_affinity": np.array([[1.0, np.nan], [0.0, 1.0]])}, ValueError, "log_affinity"),
        ({"log_affinity": np.array([[1.0, np.inf], [0.0, 1.0]])}, ValueError, "log_affinity"),
        ({"log_affinity": np.zeros((0, 3))}, ValueError, "log_affinity"),
        ({"log_affinity": np.eye(2, dtype=int)}, TypeError, "log_affinity"),
        ({"log_affinity": [[1.0, 0.0], [0.0, 1.0]]}, TypeError, "log_affinity"),
        ({"eta": 0.0}, ValueError, "eta"),
        ({"eta": -1.0}, ValueError, "eta"),
        ({"eta": float("nan")}, ValueError, "eta"),
        ({"n_iter": 0}, ValueError, "n_iter"),
        ({"n_iter": 2.5}, TypeError, "n_iter"),
        ({"tol": -1e-3}, ValueError, "tol"),
    ],
)
def test_bad_input(kwargs, exc, match):
    args = {"log_affinity": np.eye(2), "eta": 1.0}
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        sinkhorn(**args)
