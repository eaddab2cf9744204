"""Tests of subspacelab.manifolds on every backend of the fixture (spec altmin_gcr_concrete B.4).

Bases are drawn as NumPy float64 arrays (Gaussian, then QR), moved to the backend, and results
come back with ``backend.to_numpy``. Shapes stay small (d <= 9, k <= 4).
"""

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given
from hypothesis import strategies as st

from subspacelab._backend import array_namespace, device
from subspacelab.manifolds import (
    grassmann_distance,
    grassmann_exp,
    grassmann_project,
    principal_angles,
    qr_retraction,
)

seeds = st.integers(0, 2**32 - 1)


@st.composite
def shapes(draw, batch=True):
    d = draw(st.integers(1, 9))
    k = draw(st.integers(1, min(d, 4)))
    lead = draw(st.sampled_from([(), (2,), (3, 1)])) if batch else ()
    return (*lead, d, k)


def random_basis(rng, shape):
    return np.linalg.qr(rng.standard_normal(shape))[0]


def horizontal(rng, S, size=1.0):
    """A random tangent vector at S with spectral norm ``size``."""
    D = rng.standard_normal(S.shape)
    V = D - S @ (np.swapaxes(S, -1, -2) @ D)
    norms = np.linalg.norm(V, ord=2, axis=(-2, -1), keepdims=True)
    return size * V / np.where(norms > 0, norms, 1.0)


def gram_error(Q):
    k = Q.shape[-1]
    return np.abs(np.swapaxes(Q, -1, -2) @ Q - np.eye(k)).max()


def same_place(out, like):
    assert array_namespace(out) is array_namespace(like)
    assert device(out) == device(like)


# --------------------------------------------------------------------------------------------
# tangent projection


@given(shape=shapes(), seed=seeds)
def test_projection_is_horizontal_and_idempotent(backend, shape, seed):
    rng = np.random.default_rng(seed)
    S = random_basis(rng, shape)
    D = rng.standard_normal(shape)
    G = grassmann_project(backend.asarray(S), backend.asarray(D))
    G2 = grassmann_project(backend.asarray(S), G)
    Gn = backend.to_numpy(G)
    np.testing.assert_allclose(np.swapaxes(S, -1, -2) @ Gn, 0.0, atol=1e-13)
    np.testing.assert_allclose(backend.to_numpy(G2), Gn, atol=1e-13)
    np.testing.assert_allclose(Gn, D - S @ (np.swapaxes(S, -1, -2) @ D), atol=1e-13)
    same_place(G, backend.asarray(S))


# --------------------------------------------------------------------------------------------
# geodesic step


@given(shape=shapes(), seed=seeds, size=st.floats(0.0, 3.0))
def test_geodesic_stays_on_the_manifold(backend, shape, seed, size):
    rng = np.random.default_rng(seed)
    S = random_basis(rng, shape)
    V = horizontal(rng, S, size)
    out = grassmann_exp(backend.asarray(S), backend.asarray(V))
    assert gram_error(backend.to_numpy(out)) < 1e-13
    same_place(out, backend.asarray(S))


@given(shape=shapes(batch=False), seed=seeds, size=st.floats(1e-3, 1.5))
def test_geodesic_principal_angles_are_the_singular_values(backend, shape, seed, size):
    """Spec B.4 check 5: the angles between S and exp_S(V) are the singular values of V."""
    d, k = shape
    if d == k:
        return  # Gr(d, d) is one point: every tangent vector is 0
    rng = np.random.default_rng(seed)
    S = random_basis(rng, shape)
    V = horizontal(rng, S, size)
    out = grassmann_exp(backend.asarray(S), backend.asarray(V))
    theta = backend.to_numpy(principal_angles(backend.asarray(S), out))
    expected = np.sort(np.linalg.svd(V, compute_uv=False))
    np.testing.assert_allclose(theta, expected, atol=1e-10)


def test_rank_one_step_changes_one_angle(backend, rng):
    """A single-sample gradient is rank one, so only one principal angle moves."""
    S = random_basis(rng, (7, 3))
    x = rng.standard_normal((7, 1))
    D = x @ (x.T @ S)  # the shape of one sample's Euclidean gradient
    G = D - S @ (S.T @ D)
    out = grassmann_exp(backend.asarray(S), backend.asarray(-0.3 * G / np.linalg.norm(G, 2)))
    theta = backend.to_numpy(principal_angles(backend.asarray(S), out))
    np.testing.assert_allclose(theta, [0.0, 0.0, 0.3], atol=1e-10)


def test_many_geodesic_steps_stay_orthonormal_without_qr(backend, rng):
    S = random_basis(rng, (4, 9, 3))
    Sb = backend.asarray(S)
    for _ in range(200):
        V = horizontal(rng, backend.to_numpy(Sb), 0.2)
        Sb = grassmann_exp(Sb, backend.asarray(V))
    assert gram_error(backend.to_numpy(Sb)) < 1e-10


def test_geodesic_of_zero_is_identity_and_non_tangent_is_projected(backend, rng):
    S = random_basis(rng, (6, 2))
    out = grassmann_exp(backend.asarray(S), backend.asarray(np.zeros((6, 2))))
    np.testing.assert_allclose(backend.to_numpy(out), S, atol=1e-14)
    V = horizontal(rng, S, 0.5)
    W = V + S @ rng.standard_normal((2, 2))  # add a vertical component
    a = grassmann_exp(backend.asarray(S), backend.asarray(W))
    b = grassmann_exp(backend.asarray(S), backend.asarray(V))
    np.testing.assert_allclose(backend.to_numpy(a), backend.to_numpy(b), atol=1e-12)


def test_geodesic_reduces_to_retraction_for_small_steps(backend, rng):
    """exp_S(tV) and qf(S + tV) agree to second order in t (as matrices, not only spans)."""
    S = random_basis(rng, (2, 8, 3))
    V = horizontal(rng, S, 1.0)
    errors = []
    for t in (1e-2, 1e-3, 1e-4):
        e = grassmann_exp(backend.asarray(S), backend.asarray(t * V))
        r = qr_retraction(backend.asarray(S), backend.asarray(t * V))
        errors.append(np.abs(backend.to_numpy(e) - backend.to_numpy(r)).max())
    # first order agreement is the retraction property; the error must shrink like t^2
    assert errors[0] < 1e-3
    assert errors[1] < errors[0] / 50
    assert errors[2] < errors[1] / 50


def test_geodesic_keeps_float32(backend, rng):
    S = random_basis(rng, (5, 2))
    V = horizontal(rng, S, 0.4)
    xp = backend.xp
    out = grassmann_exp(backend.asarray(S, xp.float32), backend.asarray(V, xp.float32))
    assert out.dtype == xp.float32
    assert gram_error(backend.to_numpy(out).astype(np.float64)) < 1e-5


# --------------------------------------------------------------------------------------------
# QR retraction


@given(shape=shapes(), seed=seeds)
def test_qr_orthonormalises_keeps_span_and_fixes_signs(backend, shape, seed):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal(shape)
    Q = backend.to_numpy(qr_retraction(backend.asarray(A)))
    assert gram_error(Q) < 1e-12
    R = np.swapaxes(Q, -1, -2) @ A  # A = Q R with R upper triangular, diagonal >= 0
    np.testing.assert_allclose(np.tril(R, -1), 0.0, atol=1e-10)
    assert (np.diagonal(R, axis1=-2, axis2=-1) >= -1e-12).all()
    np.testing.assert_allclose(Q @ R, A, atol=1e-10)


def test_qr_of_an_orthonormal_basis_is_itself(backend, rng):
    S = random_basis(rng, (3, 7, 3))
    S = S * np.sign(np.diagonal(np.linalg.qr(S)[1], axis1=-2, axis2=-1))[..., None, :]
    np.testing.assert_allclose(backend.to_numpy(qr_retraction(backend.asarray(S))), S, atol=1e-14)


# --------------------------------------------------------------------------------------------
# principal angles and distance


@given(d=st.integers(2, 9), ka=st.integers(1, 4), kb=st.integers(1, 4), seed=seeds)
def test_principal_angles_match_scipy(backend, d, ka, kb, seed):
    ka, kb = min(ka, d), min(kb, d)
    rng = np.random.default_rng(seed)
    A, B = rng.standard_normal((d, ka)), rng.standard_normal((d, kb))
    theta = backend.to_numpy(principal_angles(backend.asarray(A), backend.asarray(B)))
    expected = np.sort(scipy.linalg.subspace_angles(A, B))
    np.testing.assert_allclose(theta, expected, atol=1e-10)
    assert np.all(np.diff(theta) >= -1e-12)
    # angles depend on the spans only, and are symmetric
    M = rng.standard_normal((ka, ka)) + 3 * np.eye(ka)
    again = principal_angles(backend.asarray(A @ M), backend.asarray(B))
    np.testing.assert_allclose(backend.to_numpy(again), theta, atol=1e-9)
    swapped = principal_angles(backend.asarray(B), backend.asarray(A))
    np.testing.assert_allclose(backend.to_numpy(swapped), theta, atol=1e-10)


@pytest.mark.parametrize("angle", [1e-9, 1e-5, 0.3, np.pi / 4, 1.2, np.pi / 2 - 1e-9])
def test_principal_angles_exact_for_planted_angles(backend, angle):
    """Small angles stay accurate to machine precision (arccos alone would lose them)."""
    d, k = 7, 3
    A = np.eye(d)[:, :k]
    B = np.cos(angle) * np.eye(d)[:, :k] + np.sin(angle) * np.eye(d)[:, k : 2 * k]
    B[:, 0] = A[:, 0]  # one angle 0
    theta = backend.to_numpy(principal_angles(backend.asarray(A), backend.asarray(B)))
    np.testing.assert_allclose(theta, [0.0, angle, angle], rtol=1e-12, atol=1e-15)
    dist = backend.to_numpy(grassmann_distance(backend.asarray(A), backend.asarray(B)))
    np.testing.assert_allclose(dist, np.sqrt(2) * angle, rtol=1e-12)


def test_distance_batched_and_zero_on_same_span(backend, rng):
    A = rng.standard_normal((3, 6, 2))
    M = rng.standard_normal((3, 2, 2)) + 3 * np.eye(2)
    dist = grassmann_distance(backend.asarray(A), backend.asarray(A @ M))
    assert tuple(dist.shape) == (3,)
    np.testing.assert_allclose(backend.to_numpy(dist), 0.0, atol=1e-7)


# --------------------------------------------------------------------------------------------
# bad input


def test_errors_name_the_problem(backend, rng):
    S = backend.asarray(random_basis(rng, (5, 2)))
    with pytest.raises(ValueError, match="same shape"):
        grassmann_project(S, backend.asarray(np.zeros((5, 3))))
    with pytest.raises(ValueError, match="k <= d"):
        grassmann_exp(backend.asarray(np.zeros((2, 3))), backend.asarray(np.zeros((2, 3))))
    with pytest.raises(ValueError, match="k <= d"):
        qr_retraction(backend.asarray(np.zeros((2, 3))))
    with pytest.raises(ValueError, match="same d"):
        principal_angles(S, backend.asarray(np.ones((4, 2))))
    with pytest.raises(ValueError, match="NaN"):
        grassmann_exp(S, backend.asarray(np.full((5, 2), np.nan)))
    with pytest.raises(ValueError, match="at least 2"):
        principal_angles(backend.asarray(np.ones(5)), S)
    with pytest.raises(TypeError, match="array"):
        grassmann_project(S, [[0.0, 0.0]] * 5)


def test_mixed_libraries_are_refused(rng):
    torch = pytest.importorskip("torch")
    S = random_basis(rng, (4, 2))
    with pytest.raises(TypeError, match="one array library"):
        grassmann_exp(S, torch.zeros(4, 2, dtype=torch.float64))


def test_docstring_examples_run():
    import doctest

    import subspacelab.manifolds as module

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
