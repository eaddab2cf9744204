"""Conjugate gradients (specs/diffusion_flow.md sections 2.2, 2.7 and 8 items 4-5).

The DDS reference CG (``utils.py::CG``) uses unconjugated inner products and no breakdown
guard; ``_dds_reference_cg`` re-creates its recurrence so the regression tests show that it
fails where ours succeeds.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from subspacelab.operators import Inpainting, MultiCoilMRI, birdcage_maps, conjugate_gradient, sampling_mask


def _hpd(rng, n, complex_=False, n_distinct=None, cond=10.0):
    Z = rng.normal(size=(n, n)) + (1j * rng.normal(size=(n, n)) if complex_ else 0)
    Q, _ = np.linalg.qr(Z)
    if n_distinct is None:
        lam = np.geomspace(1.0, cond, n)
    else:
        lam = np.resize(np.linspace(1.0, cond, n_distinct), n)
    return (Q * lam) @ Q.conj().T


def _dds_reference_cg(H, b, x, n_iter):
    """The recurrence of DDS ``utils.py::CG``: r^T r without conjugation, no guard."""
    r = b - H @ x
    p = r.copy()
    rs_old = r @ r
    for _ in range(n_iter):
        Ap = H @ p
        a = rs_old / (p @ Ap)
        x = x + a * p
        r = r - a * Ap
        rs_new = r @ r
        p = r + (rs_new / rs_old) * p
        rs_old = rs_new
    return x


@given(n=st.integers(1, 30), seed=st.integers(0, 10**6), complex_=st.booleans())
def test_exact_within_n_iterations(n, seed, complex_):
    rng = np.random.default_rng(seed)
    H = _hpd(rng, n, complex_)
    b = rng.normal(size=n) + (1j * rng.normal(size=n) if complex_ else 0)
    res = conjugate_gradient(lambda v: H @ v, b, tol=1e-10, max_iter=n)
    np.testing.assert_allclose(res.x, np.linalg.solve(H, b), rtol=1e-9, atol=1e-9)
    assert bool(res.converged) and int(res.n_iter) <= n
    assert np.all(np.isfinite(conjugate_gradient(lambda v: H @ v, b, max_iter=3 * n, fixed_iter=True).x))


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_k_distinct_eigenvalues_converge_in_k_steps(k, rng):
    H = _hpd(rng, 40, complex_=True, n_distinct=k)
    b = rng.normal(size=40) + 1j * rng.normal(size=40)
    res = conjugate_gradient(lambda v: H @ v, b, tol=1e-10)
    assert int(res.n_iter) == k
    np.testing.assert_allclose(res.x, np.linalg.solve(H, b), atol=1e-8)


def test_error_monotone_and_krylov_optimal(rng):
    n = 25
    H = _hpd(rng, n, complex_=True, cond=100.0)
    b = rng.normal(size=n) + 1j * rng.normal(size=n)
    x0 = rng.normal(size=n) + 1j * rng.normal(size=n)
    xs = np.linalg.solve(H, b)
    r0 = b - H @ x0
    prev = np.inf
    for k in range(1, 8):
        xk = conjugate_gradient(lambda v: H @ v, b, x0, max_iter=k, tol=0.0).x
        e = xk - xs
        err = np.real(np.vdot(e, H @ e))
        assert err <= prev * (1 + 1e-12)
        prev = err
        # minimiser of the H-norm error over x0 + K_k(H, r0): explicit least squares in a basis
        K = np.stack([np.linalg.matrix_power(H, j) @ r0 for j in range(k)], axis=1)
        K, _ = np.linalg.qr(K)
        c = np.linalg.solve(K.conj().T @ H @ K, K.conj().T @ (b - H @ x0))
        np.testing.assert_allclose(xk, x0 + K @ c, atol=1e-8)


def test_complex_hpd_regression_dds_cg_fails(rng):
    # spec 2.7-1: the unconjugated recurrence does not solve a Hermitian system
    H = _hpd(rng, 60, complex_=True, cond=50.0)
    b = rng.normal(size=60) + 1j * rng.normal(size=60)
    xs = np.linalg.solve(H, b)
    theirs = _dds_reference_cg(H, b, np.zeros(60, complex), 120)
    ours = conjugate_gradient(lambda v: H @ v, b, tol=1e-14, max_iter=120).x
    assert np.linalg.norm(theirs - xs) / np.linalg.norm(xs) > 1e-2
    assert np.linalg.norm(ours - xs) / np.linalg.norm(xs) < 1e-10


def test_no_nan_past_convergence(rng):
    # spec 2.7-2: 200 fixed iterations on a well-conditioned MRI system stay finite
    shape = (16, 16)
    m = sampling_mask(shape, "uniform1d", 4, 0.08, random_state=0).mask
    A = MultiCoilMRI(m, birdcage_maps(shape, 4))
    x_true = rng.normal(size=shape) + 1j * rng.normal(size=shape)
    b = x_true + A.normal(x_true)
    res = conjugate_gradient(lambda v: v + A.normal(v), b, max_iter=200, fixed_iter=True)
    assert np.all(np.isfinite(res.x))
    np.testing.assert_allclose(res.x, x_true, atol=1e-10)
    assert bool(res.converged)
    with np.errstate(all="ignore"):
        H = np.eye(4) * 2.0
        theirs = _dds_reference_cg(H, np.ones(4), np.zeros(4), 5)
    assert np.any(~np.isfinite(theirs))


def test_breakdown_on_indefinite_is_flagged():
    H = np.diag([1.0, -1.0])
    res = conjugate_gradient(lambda v: H @ v, np.array([1.0, 1.0]), max_iter=10)
    assert np.all(np.isfinite(res.x)) and not bool(res.converged)


def test_batched_systems_and_warm_start(backend, rng):
    B, n = 3, 6
    Hs = np.stack([_hpd(rng, n) for _ in range(B)])
    b = rng.normal(size=(B, n))
    b[1] = 0.0  # an already-solved system must stay at its start (zero) without NaN
    Hx = backend.asarray(Hs)
    xp = backend.xp
    res = conjugate_gradient(lambda v: xp.sum(Hx * v[:, None, :], axis=-1), backend.asarray(b), tol=1e-12, event_ndim=1)
    ref = np.stack([np.linalg.solve(Hs[i], b[i]) for i in range(B)])
    np.testing.assert_allclose(backend.to_numpy(res.x), ref, atol=1e-9)
    assert backend.to_numpy(res.n_iter).tolist()[1] == 0
    assert np.all(backend.to_numpy(res.converged))
    warm = conjugate_gradient(lambda v: xp.sum(Hx * v[:, None, :], axis=-1), backend.asarray(b), backend.asarray(ref),
                              tol=1e-8, event_ndim=1)
    assert np.all(backend.to_numpy(warm.n_iter) <= 1)


def test_complex_mri_on_every_backend(backend, rng):
    shape = (8, 7)
    m = sampling_mask(shape, "gaussian1d", 2, 0.2, random_state=1).mask
    maps = birdcage_maps(shape, 3, xp=backend.xp, device=backend.device)
    A = MultiCoilMRI(backend.asarray(m), maps)
    xt = rng.normal(size=shape) + 1j * rng.normal(size=shape)
    b = backend.asarray(xt) + 0.5 * A.normal(backend.asarray(xt))
    res = conjugate_gradient(lambda v: v + 0.5 * A.normal(v), b, tol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(res.x), xt, atol=1e-9)


def _dds_problem(rng, m=5, n=12, complex_=True):
    A = rng.normal(size=(m, n)) + (1j * rng.normal(size=(m, n)) if complex_ else 0)
    x0 = rng.normal(size=n) + (1j * rng.normal(size=n) if complex_ else 0)
    y = rng.normal(size=m) + (1j * rng.normal(size=m) if complex_ else 0)
    return A, x0, y


@pytest.mark.parametrize("complex_", [False, True])
def test_krylov_property_keeps_null_space(complex_, rng):
    A, x0, y = _dds_problem(rng, complex_=complex_)
    Ap = np.linalg.pinv(A)
    Pnull = np.eye(A.shape[1]) - Ap @ A
    AH = A.conj().T
    for M in range(1, 8):
        xM = conjugate_gradient(lambda v: AH @ (A @ v), AH @ y, x0, max_iter=M, tol=0.0).x
        np.testing.assert_allclose(Pnull @ (xM - x0), 0, atol=1e-10)
    # at rank(A) iterations: the orthogonal projection of x0 onto {A x = y}
    x5 = conjugate_gradient(lambda v: AH @ (A @ v), AH @ y, x0, max_iter=5, tol=0.0).x
    np.testing.assert_allclose(x5, x0 + Ap @ (y - A @ x0), atol=1e-9)


def test_noisy_branch_reaches_proximal_solution(rng):
    A, x0, y = _dds_problem(rng)
    gamma = 0.7
    AH = A.conj().T
    res = conjugate_gradient(lambda v: v + gamma * (AH @ (A @ v)), x0 + gamma * (AH @ y), x0, tol=1e-13)
    expected = x0 + gamma * AH @ np.linalg.solve(np.eye(A.shape[0]) + gamma * A @ AH, y - A @ x0)
    np.testing.assert_allclose(res.x, expected, atol=1e-10)


def test_inpainting_one_step_is_hard_replacement(rng):
    mask = (rng.random((6, 6)) < 0.5).astype(float)
    P = Inpainting(mask)
    x0, y = rng.normal(size=(6, 6)), mask * rng.normal(size=(6, 6))
    one = conjugate_gradient(P.normal, P.adjoint(y), x0, max_iter=1, tol=0.0).x
    np.testing.assert_allclose(one, x0 + mask * (y - x0), atol=1e-12)
    gamma = 2.0
    noisy = conjugate_gradient(lambda v: v + gamma * P.normal(v), x0 + gamma * y, x0, tol=1e-13).x
    np.testing.assert_allclose(noisy, (x0 + gamma * y) / (1 + gamma * mask), atol=1e-12)


def test_linear_operator_argument(rng):
    mask = (rng.random((2, 4, 4)) < 0.5).astype(float)
    P = Inpainting(mask[0])
    b = rng.normal(size=(2, 4, 4)) * mask[0]
    res = conjugate_gradient(P, b)
    assert res.x.shape == (2, 4, 4) and res.n_iter.shape == (2,)
    np.testing.assert_allclose(mask[0] * res.x, b)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"tol": -1.0}, ValueError, "tol"),
        ({"max_iter": -1}, ValueError, "max_iter"),
        ({"event_ndim": 3}, ValueError, "event_ndim"),
        ({"x0": np.ones(3)}, ValueError, "x0"),
        ({"b": np.ones(2, dtype=int)}, TypeError, "floating"),
        ({"b": np.array([1.0, np.nan])}, ValueError, "finite"),
        ({"A": 3}, TypeError, "callable"),
    ],
)
def test_bad_input(kwargs, exc, match):
    args = {"A": lambda v: v, "b": np.ones(2)}
    args.update(kwargs)
    A, b = args.pop("A"), args.pop("b")
    with pytest.raises(exc, match=match):
        conjugate_gradient(A, b, **args)
