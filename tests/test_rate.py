"""Property tests of subspacelab.rate (spec rate_reduction.md §0.8, §1.5, §2.5, §3.5).

Data are drawn with hypothesis as NumPy float64 arrays and moved to each backend of the
``backend`` fixture; results come back with ``backend.to_numpy``. Shapes stay small
(d <= 8, n <= 24) so that the file runs in seconds.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from subspacelab import rate
from subspacelab._backend import array_namespace, device
from subspacelab.rate import (
    coding_length,
    coding_rate,
    coding_rate_grad,
    compressed_coding_rate,
    compressed_coding_rate_grad,
    rate_reduction,
    rate_reduction_grad,
    sparse_rate_reduction,
    subspace_compressed_rate,
    subspace_compressed_rate_grad,
)

RTOL = 1e-10
ATOL = 1e-12

eps_sqs = st.sampled_from([0.01, 0.1, 0.5, 1.0, 2.0])
seeds = st.integers(0, 2**32 - 1)


def close(actual, expected, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


@st.composite
def matrices(draw, n=(1, 24), d=(1, 8)):
    """A float64 matrix with entries in [-2, 2], shape drawn in the given ranges."""
    shape = (draw(st.integers(*n)), draw(st.integers(*d)))
    elements = st.floats(-2.0, 2.0, allow_nan=False, allow_subnormal=False, width=64)
    return draw(hnp.arrays(np.float64, shape, elements=elements))


@st.composite
def memberships(draw, n, k=(1, 5)):
    """Soft memberships (n, K) with rows on the simplex (zeros allowed, empty columns too)."""
    K = draw(st.integers(*k))
    elements = st.floats(0.0, 1.0, allow_nan=False, allow_subnormal=False, width=64)
    W = draw(hnp.arrays(np.float64, (n, K), elements=elements))
    W = W.copy()
    W[W.sum(axis=1) == 0, :] = 1.0
    return W / W.sum(axis=1, keepdims=True)


def gaussian(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape)


def unit_rows(Z):
    return Z / np.linalg.norm(Z, axis=1, keepdims=True)


def orthogonal(seed, d):
    q, r = np.linalg.qr(gaussian(seed, (d, d)))
    return q * np.sign(np.diag(r))


def sinkhorn(A, n_iter=2000):
    """Doubly stochastic scaling of a positive matrix (plain NumPy, for the tests)."""
    G = A.copy()
    for _ in range(n_iter):
        G /= G.sum(axis=1, keepdims=True)
        G /= G.sum(axis=0, keepdims=True)
    return G / G.sum(axis=1, keepdims=True)


# ---- NumPy references (direct d x d formulas) -------------------------------------------------


def ref_rate(Z, eps_sq):
    n, d = Z.shape
    return 0.5 * np.linalg.slogdet(np.eye(d) + d / (n * eps_sq) * Z.T @ Z)[1]


def ref_compressed(Z, W, eps_sq):
    n, d = Z.shape
    total = 0.0
    for k in range(W.shape[1]):
        t = W[:, k].sum()
        if t > 0:
            M = np.eye(d) + d / (t * eps_sq) * Z.T @ (W[:, k, None] * Z)
            total += t / (2 * n) * np.linalg.slogdet(M)[1]
    return total


def one_hot(labels, K=None):
    K = labels.max() + 1 if K is None else K
    return np.eye(K)[labels]


# ---- worked examples ------------------------------------------------------------------------


def test_worked_example_mcr2(backend):
    """§1.5: d = n = 2, Z = I, eps^2 = 1."""
    Z = backend.asarray(np.eye(2))
    labels = backend.asarray(np.array([0, 1]))
    close(backend.to_numpy(coding_rate(Z, eps_sq=1.0)), math.log(2))
    close(backend.to_numpy(compressed_coding_rate(Z, labels, eps_sq=1.0)), 0.5 * math.log(3))
    close(backend.to_numpy(compressed_coding_rate(Z, Z, eps_sq=1.0)), 0.5 * math.log(3))
    close(backend.to_numpy(rate_reduction(Z, labels, eps_sq=1.0)), math.log(2) - 0.5 * math.log(3))
    np.testing.assert_allclose(backend.to_numpy(rate_reduction(Z, labels, eps_sq=1.0)), 0.143841, atol=1e-6)
    collinear = backend.asarray(np.array([[1.0, 0.0], [1.0, 0.0]]))
    close(backend.to_numpy(coding_rate(collinear, eps_sq=1.0)), 0.5 * math.log(3))
    np.testing.assert_allclose(0.5 * math.log(3), 0.549306, atol=1e-6)


def test_worked_example_crate(backend):
    """Tokens Z = I_2, subspaces e_1 and e_2 (p = 1), eps^2 = 1: beta = 1/2."""
    Z = backend.asarray(np.eye(2))
    U = backend.asarray(np.eye(2)[:, :, None])
    close(backend.to_numpy(subspace_compressed_rate(Z, U, eps_sq=1.0)), math.log(1.5))
    close(
        backend.to_numpy(sparse_rate_reduction(Z, U, eps_sq=1.0, lam=0.1)),
        math.log(2) - math.log(1.5) - 0.1 * 2,
    )
    close(backend.to_numpy(subspace_compressed_rate_grad(Z, U, eps_sq=1.0)), np.eye(2) / 3)


def test_worked_example_mlc_identity(backend):
    """§2.1 / Appendix A: Gamma = I with unit-norm Z gives 1/2 log(1 + d/eps^2) = 1.28247."""
    Z = unit_rows(gaussian(0, (10, 6)))
    out = compressed_coding_rate(backend.asarray(Z), backend.asarray(np.eye(10)), eps_sq=0.5)
    close(backend.to_numpy(out), 0.5 * math.log(13))
    np.testing.assert_allclose(0.5 * math.log(13), 1.28247, atol=1e-5)


# ---- §0.8 bounds ------------------------------------------------------------------------------


@given(seed=seeds, n=st.integers(1, 24), d=st.integers(1, 8), eps_sq=eps_sqs)
def test_bounds_unit_norm(backend, seed, n, d, eps_sq):
    Z = unit_rows(gaussian(seed, (n, d)))
    r = min(n, d)
    R = backend.to_numpy(coding_rate(backend.asarray(Z), eps_sq=eps_sq))
    assert 0.5 * math.log1p(d / eps_sq) - 1e-10 <= R <= r / 2 * math.log1p(d / (r * eps_sq)) + 1e-10


@given(seed=seeds, n=st.integers(1, 24), d=st.integers(1, 8), eps_sq=eps_sqs)
def test_lower_bound_attained_by_collinear_rows(backend, seed, n, d, eps_sq):
    u = unit_rows(gaussian(seed, (1, d)))
    signs = np.where(np.random.default_rng(seed).random(n) < 0.5, -1.0, 1.0)
    Z = signs[:, None] * u
    R = backend.to_numpy(coding_rate(backend.asarray(Z), eps_sq=eps_sq))
    close(R, 0.5 * math.log1p(d / eps_sq))


@given(seed=seeds, m=st.integers(1, 3), d=st.integers(1, 8), eps_sq=eps_sqs)
def test_upper_bound_attained_by_tight_frame(backend, seed, m, d, eps_sq):
    # n = m d rows: m copies of an orthonormal basis, Z^T Z = (n/d) I.
    Z = np.tile(orthogonal(seed, d), (m, 1))
    R = backend.to_numpy(coding_rate(backend.asarray(Z), eps_sq=eps_sq))
    close(R, d / 2 * math.log1p(1 / eps_sq))
    # n <= d orthonormal rows: r = n.
    n = 1 + seed % d
    Zn = orthogonal(seed + 1, d)[:n]
    Rn = backend.to_numpy(coding_rate(backend.asarray(Zn), eps_sq=eps_sq))
    close(Rn, n / 2 * math.log1p(d / (n * eps_sq)))


# ---- §1.5 invariants -------------------------------------------------------------------------


@given(Z=matrices(), eps_sq=eps_sqs)
def test_gram_identity(backend, Z, eps_sq):
    n, d = Z.shape
    R = backend.to_numpy(coding_rate(backend.asarray(Z), eps_sq=eps_sq))
    # The transpose has alpha' = n / (d eps'^2) = alpha when eps'^2 = eps^2 n^2 / d^2, and
    # the other of the two Gram matrices is the smaller one.
    Rt = backend.to_numpy(coding_rate(backend.asarray(Z.T.copy()), eps_sq=eps_sq * n**2 / d**2))
    close(R, Rt)
    close(R, ref_rate(Z, eps_sq))
    n_I = 0.5 * np.linalg.slogdet(np.eye(n) + d / (n * eps_sq) * Z @ Z.T)[1]
    close(R, n_I)


@given(data=st.data(), Z=matrices(), eps_sq=eps_sqs)
def test_compressed_matches_reference_both_forms(backend, data, Z, eps_sq, monkeypatch):
    """Soft memberships (d x d form when n >= d, n x n form when n < d) and hard labels agree
    with the direct formula; chunking over clusters does not change the value."""
    n = Z.shape[0]
    W = data.draw(memberships(n))
    W = np.concatenate([W, np.zeros((n, 1))], axis=1)  # an empty cluster contributes 0
    expected = ref_compressed(Z, W, eps_sq)
    Zb, Wb = backend.asarray(Z), backend.asarray(W)
    close(backend.to_numpy(compressed_coding_rate(Zb, Wb, eps_sq=eps_sq)), expected)
    labels = data.draw(hnp.arrays(np.int64, n, elements=st.integers(0, 4)))
    expected_hard = ref_compressed(Z, one_hot(labels), eps_sq)
    out = compressed_coding_rate(Zb, backend.asarray(labels), eps_sq=eps_sq)
    close(backend.to_numpy(out), expected_hard)
    gm = compressed_coding_rate_grad(Zb, Wb, eps_sq=eps_sq, wrt="membership")
    gz = compressed_coding_rate_grad(Zb, Wb, eps_sq=eps_sq)
    with monkeypatch.context() as m:  # one cluster per chunk
        m.setattr(rate, "_MAX_CHUNK_ELEMENTS", 1)
        close(backend.to_numpy(compressed_coding_rate(Zb, Wb, eps_sq=eps_sq)), expected)
        gm_chunked = compressed_coding_rate_grad(Zb, Wb, eps_sq=eps_sq, wrt="membership")
        gz_chunked = compressed_coding_rate_grad(Zb, Wb, eps_sq=eps_sq)
    close(backend.to_numpy(gm_chunked), backend.to_numpy(gm))
    close(backend.to_numpy(gz_chunked), backend.to_numpy(gz))


@given(data=st.data(), Z=matrices(), seed=seeds, eps_sq=eps_sqs)
def test_orthogonal_invariance(backend, data, Z, seed, eps_sq):
    n, d = Z.shape
    Q = orthogonal(seed, d)
    W = data.draw(memberships(n))
    labels = np.argmax(W, axis=1)
    for f, args in ((coding_rate, ()), (compressed_coding_rate, (W,)), (compressed_coding_rate, (labels,))):
        args_b = tuple(backend.asarray(a) for a in args)
        a = backend.to_numpy(f(backend.asarray(Z), *args_b, eps_sq=eps_sq))
        b = backend.to_numpy(f(backend.asarray(Z @ Q), *args_b, eps_sq=eps_sq))
        close(a, b, rtol=1e-9, atol=1e-10)


@given(data=st.data(), Z=matrices(), seed=seeds, eps_sq=eps_sqs)
def test_permutation_invariance(backend, data, Z, seed, eps_sq):
    n = Z.shape[0]
    W = data.draw(memberships(n))
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    kperm = rng.permutation(W.shape[1])
    R = backend.to_numpy(coding_rate(backend.asarray(Z), eps_sq=eps_sq))
    close(backend.to_numpy(coding_rate(backend.asarray(Z[perm]), eps_sq=eps_sq)), R)
    Rc = backend.to_numpy(compressed_coding_rate(backend.asarray(Z), backend.asarray(W), eps_sq=eps_sq))
    Rc_p = compressed_coding_rate(backend.asarray(Z[perm]), backend.asarray(W[perm]), eps_sq=eps_sq)
    close(backend.to_numpy(Rc_p), Rc)
    Rc_k = compressed_coding_rate(backend.asarray(Z), backend.asarray(W[:, kperm]), eps_sq=eps_sq)
    close(backend.to_numpy(Rc_k), Rc)
    # relabelling hard clusters
    labels = np.argmax(W, axis=1)
    relabel = rng.permutation(10)
    a = compressed_coding_rate(backend.asarray(Z), backend.asarray(labels), eps_sq=eps_sq)
    b = compressed_coding_rate(backend.asarray(Z), backend.asarray(relabel[labels]), eps_sq=eps_sq)
    close(backend.to_numpy(a), backend.to_numpy(b))


@given(data=st.data(), Z=matrices(), eps_sq=eps_sqs)
def test_rate_reduction_nonnegative_soft(backend, data, Z, eps_sq):
    W = data.draw(memberships(Z.shape[0]))
    dr = backend.to_numpy(rate_reduction(backend.asarray(Z), backend.asarray(W), eps_sq=eps_sq))
    assert dr >= -1e-10
    assert backend.to_numpy(compressed_coding_rate(backend.asarray(Z), backend.asarray(W), eps_sq=eps_sq)) >= 0


@given(Z=matrices(n=(2, 16)), seed=seeds, eps_sq=eps_sqs)
def test_rate_reduction_nonnegative_doubly_stochastic(backend, Z, seed, eps_sq):
    n = Z.shape[0]
    A = np.exp(3 * np.random.default_rng(seed).random((n, n)))
    Gamma = sinkhorn(A)
    dr = backend.to_numpy(rate_reduction(backend.asarray(Z), backend.asarray(Gamma), eps_sq=eps_sq))
    assert dr >= -1e-10


@given(Z=matrices(), seed=seeds, eps_sq=eps_sqs)
def test_rate_reduction_zero_for_one_cluster(backend, Z, seed, eps_sq):
    n = Z.shape[0]
    Zb = backend.asarray(Z)
    c = np.random.default_rng(seed).random(3) + 0.1
    c /= c.sum()
    for membership in (
        np.zeros(n, dtype=np.int64),  # one hard cluster
        np.ones((n, 1)),  # one soft cluster
        np.tile(c, (n, 1)),  # constant columns c_k 1
        np.full((n, n), 1.0 / n),  # uniform Gamma: the "lazy" MLC solution
    ):
        dr = rate_reduction(Zb, backend.asarray(membership), eps_sq=eps_sq)
        close(backend.to_numpy(dr), 0.0, atol=1e-10)


@given(Z=matrices(n=(2, 24)), seed=seeds, eps_sq=eps_sqs)
def test_label_block_gamma_gives_mcr2_compressed_rate(backend, Z, seed, eps_sq):
    n = Z.shape[0]
    labels = np.random.default_rng(seed).integers(0, 4, n)
    same = labels[:, None] == labels[None, :]
    Gamma = same / same.sum(axis=0, keepdims=True)
    a = compressed_coding_rate(backend.asarray(Z), backend.asarray(Gamma), eps_sq=eps_sq)
    b = compressed_coding_rate(backend.asarray(Z), backend.asarray(labels), eps_sq=eps_sq)
    close(backend.to_numpy(a), backend.to_numpy(b))


@given(seed=seeds, n=st.integers(1, 24), d=st.integers(1, 8), eps_sq=eps_sqs)
def test_identity_and_permutation_gamma(backend, seed, n, d, eps_sq):
    Z = backend.asarray(unit_rows(gaussian(seed, (n, d))))
    expected = 0.5 * math.log1p(d / eps_sq)
    close(backend.to_numpy(compressed_coding_rate(Z, backend.asarray(np.eye(n)), eps_sq=eps_sq)), expected)
    P = np.eye(n)[np.random.default_rng(seed).permutation(n)]
    close(backend.to_numpy(compressed_coding_rate(Z, backend.asarray(P), eps_sq=eps_sq)), expected)


@given(seed=seeds, n1=st.integers(1, 12), n2=st.integers(1, 12), d=st.integers(2, 8), eps_sq=eps_sqs)
def test_orthogonal_additivity(backend, seed, n1, n2, d, eps_sq):
    rng = np.random.default_rng(seed)
    a = int(rng.integers(1, d))
    Q = orthogonal(seed, d)
    Z1 = rng.standard_normal((n1, a)) @ Q[:, :a].T
    Z2 = rng.standard_normal((n2, d - a)) @ Q[:, a:].T
    n = n1 + n2
    R = coding_rate(backend.asarray(np.vstack([Z1, Z2])), eps_sq=eps_sq)
    # Same alpha = d / (n eps^2) for the parts: eps'^2 = eps^2 n / n_i.
    R1 = coding_rate(backend.asarray(Z1), eps_sq=eps_sq * n / n1)
    R2 = coding_rate(backend.asarray(Z2), eps_sq=eps_sq * n / n2)
    close(backend.to_numpy(R), backend.to_numpy(R1) + backend.to_numpy(R2))


@given(seed=seeds, n=st.integers(1, 24), d=st.integers(1, 8), eps_sq=eps_sqs, c=st.floats(0.01, 10.0))
def test_scale_monotonicity(backend, seed, n, d, eps_sq, c):
    Z = gaussian(seed, (n, d))
    values = [backend.to_numpy(coding_rate(backend.asarray(s * Z), eps_sq=eps_sq)) for s in (c, 1.1 * c, 2 * c)]
    assert values[0] < values[1] < values[2]


@given(Z=matrices(), eps_sq=eps_sqs, g1=st.floats(0.1, 20.0), g2=st.floats(0.0, 10.0), seed=seeds)
def test_rate_reduction_weights(backend, Z, eps_sq, g1, g2, seed):
    """gamma_1 rescales alpha inside the expansion logdet (eps^2 -> eps^2 / gamma_1)."""
    labels = np.random.default_rng(seed).integers(0, 3, Z.shape[0])
    Zb, yb = backend.asarray(Z), backend.asarray(labels)
    dr = rate_reduction(Zb, yb, eps_sq=eps_sq, expansion_weight=g2, expansion_distortion_scale=g1)
    expected = g2 * ref_rate(Z, eps_sq / g1) - ref_compressed(Z, one_hot(labels), eps_sq)
    close(backend.to_numpy(dr), expected, rtol=1e-9, atol=1e-10)


# ---- gradients -------------------------------------------------------------------------------


def central_difference(f, x, h=1e-6):
    g = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        xp_, xm = x.copy(), x.copy()
        xp_[idx] += h
        xm[idx] -= h
        g[idx] = (f(xp_) - f(xm)) / (2 * h)
    return g


def grad_cases(Z, W, labels, U, eps_sq):
    """(name, value function of (Z, W), analytic gradient function, which argument)."""
    kw = {"eps_sq": eps_sq}
    return [
        ("R", lambda z, w: coding_rate(z, **kw), lambda z, w: coding_rate_grad(z, **kw), "Z"),
        (
            "Rc soft",
            lambda z, w: compressed_coding_rate(z, w, **kw),
            lambda z, w: compressed_coding_rate_grad(z, w, **kw),
            "Z",
        ),
        (
            "Rc labels",
            lambda z, w: compressed_coding_rate(z, labels, **kw),
            lambda z, w: compressed_coding_rate_grad(z, labels, **kw),
            "Z",
        ),
        (
            "Rc membership",
            lambda z, w: compressed_coding_rate(z, w, **kw),
            lambda z, w: compressed_coding_rate_grad(z, w, wrt="membership", **kw),
            "W",
        ),
        (
            "dR Z",
            lambda z, w: rate_reduction(z, w, expansion_weight=0.7, expansion_distortion_scale=2.0, **kw),
            lambda z, w: rate_reduction_grad(
                z, w, expansion_weight=0.7, expansion_distortion_scale=2.0, **kw
            ),
            "Z",
        ),
        (
            "dR membership",
            lambda z, w: rate_reduction(z, w, **kw),
            lambda z, w: rate_reduction_grad(z, w, wrt="membership", **kw),
            "W",
        ),
        (
            "CRATE Rc",
            lambda z, w: subspace_compressed_rate(z, U, **kw),
            lambda z, w: subspace_compressed_rate_grad(z, U, **kw),
            "Z",
        ),
    ]


@st.composite
def grad_inputs(draw):
    seed = draw(seeds)
    n, d = draw(st.integers(1, 6)), draw(st.integers(1, 4))
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, d))
    W = rng.random((n, 3)) + 0.05
    W /= W.sum(axis=1, keepdims=True)
    labels = rng.integers(0, 3, n)
    U = rng.standard_normal((2, d, draw(st.integers(1, d))))
    return Z, W, labels, U, draw(st.sampled_from([0.1, 0.5, 2.0]))


@settings(max_examples=10)
@given(inputs=grad_inputs())
def test_gradients_match_finite_differences(backend, inputs):
    Z, W, labels, U, eps_sq = inputs
    for name, f, grad, wrt in grad_cases(Z, W, labels, U, eps_sq):
        if wrt == "Z":
            fd = central_difference(lambda z: float(f(z, W)), Z)
        else:
            fd = central_difference(lambda w: float(f(Z, w)), W)
        args = [backend.asarray(a) for a in (Z, W)]
        if name in ("Rc labels",):
            labels_b = backend.asarray(labels)
            g = compressed_coding_rate_grad(args[0], labels_b, eps_sq=eps_sq)
        elif name == "CRATE Rc":
            g = subspace_compressed_rate_grad(args[0], backend.asarray(U), eps_sq=eps_sq)
        else:
            g = grad(*args)
        np.testing.assert_allclose(backend.to_numpy(g), fd, rtol=1e-6, atol=1e-7, err_msg=name)


@settings(max_examples=10)
@given(inputs=grad_inputs())
def test_gradients_match_torch_autograd(backend, inputs):
    torch = pytest.importorskip("torch")
    Z, W, labels, U, eps_sq = inputs
    # the same functions, on torch tensors that require grad
    Zt = torch.tensor(Z, requires_grad=True)
    Wt = torch.tensor(W, requires_grad=True)
    labels_t, U_t = torch.tensor(labels), torch.tensor(U)
    for (name, f, _, wrt), (_, _, grad, _) in zip(
        grad_cases(Z, W, labels_t, U_t, eps_sq), grad_cases(Z, W, None, None, eps_sq), strict=True
    ):
        Zt.grad = None
        Wt.grad = None
        f(Zt, Wt).backward()
        auto = (Zt if wrt == "Z" else Wt).grad.numpy()
        args = [backend.asarray(a) for a in (Z, W)]
        if name == "Rc labels":
            g = compressed_coding_rate_grad(args[0], backend.asarray(labels), eps_sq=eps_sq)
        elif name == "CRATE Rc":
            g = subspace_compressed_rate_grad(args[0], backend.asarray(U), eps_sq=eps_sq)
        else:
            g = grad(*args)
        close(backend.to_numpy(g), auto, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("n", [2, 5])  # n x n (n < d) and d x d forms
def test_empty_cluster_gradients(backend, n):
    """An empty cluster contributes exactly 0 and its membership gradient is the one-sided
    derivative (1/2n) log(1 + beta |z_i|^2); no NaN anywhere, and torch autograd agrees."""
    Z = gaussian(3, (n, 3))
    W = np.concatenate([np.full((n, 1), 1.0), np.zeros((n, 1))], axis=1)
    eps_sq = 0.5
    Zb, Wb = backend.asarray(Z), backend.asarray(W)
    close(
        backend.to_numpy(compressed_coding_rate(Zb, Wb, eps_sq=eps_sq)),
        backend.to_numpy(compressed_coding_rate(Zb, backend.asarray(W[:, :1]), eps_sq=eps_sq)),
    )
    g = backend.to_numpy(compressed_coding_rate_grad(Zb, Wb, eps_sq=eps_sq, wrt="membership"))
    beta = 3 / eps_sq
    expected = np.log1p(beta * (Z**2).sum(axis=1)) / (2 * n)
    close(g[:, 1], expected)
    # forward difference into the empty cluster (the term is linear along e_i there)
    f0 = compressed_coding_rate(Z, W, eps_sq=eps_sq)
    for i in range(n):
        Wp = W.copy()
        Wp[i, 1] += 1e-3
        forward = (compressed_coding_rate(Z, Wp, eps_sq=eps_sq) - f0) / 1e-3
        np.testing.assert_allclose(forward, g[i, 1], rtol=1e-9)
    torch = pytest.importorskip("torch")
    Wt = torch.tensor(W, requires_grad=True)
    Zt = torch.tensor(Z, requires_grad=True)
    compressed_coding_rate(Zt, Wt, eps_sq=eps_sq).backward()
    close(Wt.grad.numpy(), g)
    assert np.all(np.isfinite(Zt.grad.numpy()))


@given(Z=matrices(), seed=seeds, eps_sq=eps_sqs)
def test_gradient_rotation_equivariance(backend, Z, seed, eps_sq):
    """grad R(Z Q) = grad R(Z) Q (row form of §1.5.8), and the same for R^c."""
    Q = orthogonal(seed, Z.shape[1])
    labels = backend.asarray(np.random.default_rng(seed).integers(0, 3, Z.shape[0]))
    for grad in (
        lambda z: coding_rate_grad(z, eps_sq=eps_sq),
        lambda z: compressed_coding_rate_grad(z, labels, eps_sq=eps_sq),
    ):
        a = backend.to_numpy(grad(backend.asarray(Z @ Q)))
        b = backend.to_numpy(grad(backend.asarray(Z))) @ Q
        close(a, b, rtol=1e-9, atol=1e-10)


# ---- CRATE (§3.5) -------------------------------------------------------------------------------


@st.composite
def crate_inputs(draw):
    seed = draw(seeds)
    rng = np.random.default_rng(seed)
    N, d = draw(st.integers(1, 12)), draw(st.integers(2, 8))
    K = draw(st.integers(1, 4))
    p = draw(st.integers(1, d))
    Z = rng.standard_normal((N, d))
    U = np.stack([orthogonal(seed + k, d)[:, :p] for k in range(K)])
    return Z, U, seed


@given(inputs=crate_inputs(), eps_sq=eps_sqs)
def test_crate_rotation_invariances(backend, inputs, eps_sq):
    Z, U, seed = inputs
    K, d, p = U.shape
    base = backend.to_numpy(subspace_compressed_rate(backend.asarray(Z), backend.asarray(U), eps_sq=eps_sq))
    # §3.5.5: U_k -> U_k O_k
    UO = np.stack([U[k] @ orthogonal(seed + 100 + k, p) for k in range(K)])
    a = subspace_compressed_rate(backend.asarray(Z), backend.asarray(UO), eps_sq=eps_sq)
    close(backend.to_numpy(a), base, rtol=1e-9, atol=1e-10)
    # §3.5.6: tokens z -> Q z (rows Z Q^T) and U_k -> Q U_k
    Q = orthogonal(seed + 7, d)
    b = subspace_compressed_rate(backend.asarray(Z @ Q.T), backend.asarray(Q @ U), eps_sq=eps_sq)
    close(backend.to_numpy(b), base, rtol=1e-9, atol=1e-10)
    # The sum of per-subspace coding rates of Z U_k (beta = p / (N eps^2)).
    per = [coding_rate(backend.asarray(Z @ U[k]), eps_sq=eps_sq) for k in range(K)]
    close(base, sum(backend.to_numpy(r) for r in per))


@given(seed=seeds, N=st.integers(2, 12))
def test_crate_neumann_gradient_approximation(backend, seed, N):
    """§3.5.7: with sum_k U_k U_k^T = I, the first-order Neumann form
    beta Z - beta^2 sum_k Z U_k (U_k^T Z^T Z U_k) U_k^T has relative error O(beta^2)."""
    d, K = 6, 3
    Q = orthogonal(seed, d)
    U = np.stack([Q[:, 2 * k : 2 * k + 2] for k in range(K)])
    Z = gaussian(seed, (N, d))
    errors = []
    for eps_sq in (1e2, 1e3):
        beta = 2 / (N * eps_sq)
        exact = subspace_compressed_rate_grad(backend.asarray(Z), backend.asarray(U), eps_sq=eps_sq)
        exact = backend.to_numpy(exact)
        approx = beta * Z - beta**2 * sum(Z @ U[k] @ (U[k].T @ Z.T @ Z @ U[k]) @ U[k].T for k in range(K))
        errors.append(np.linalg.norm(exact - approx) / np.linalg.norm(exact))
    assert errors[1] < errors[0] / 50


@given(inputs=crate_inputs(), eps_sq=eps_sqs, lam=st.floats(0.0, 1.0))
def test_sparse_rate_reduction_decomposition(backend, inputs, eps_sq, lam):
    Z, U, _ = inputs
    Zb, Ub = backend.asarray(Z), backend.asarray(U)
    out = sparse_rate_reduction(Zb, Ub, eps_sq=eps_sq, lam=lam)
    expected = ref_rate(Z, eps_sq) - backend.to_numpy(subspace_compressed_rate(Zb, Ub, eps_sq=eps_sq))
    close(backend.to_numpy(out), expected - lam * np.abs(Z).sum(), rtol=1e-9, atol=1e-10)


# ---- coding length ---------------------------------------------------------------------------


@settings(max_examples=5)
@given(seed=seeds, K=st.integers(2, 4))
def test_coding_length_picks_true_number_of_clusters(backend, seed, K):
    """On a well separated union of K 2-dimensional subspaces of R^8, the true segmentation
    has a shorter coding length than merging clusters or splitting them."""
    rng = np.random.default_rng(seed)
    d, dim, m = 8, 2, 20
    Q = orthogonal(seed, d)
    Z = np.vstack([rng.standard_normal((m, dim)) @ Q[:, dim * k : dim * (k + 1)].T for k in range(K)])
    Z = unit_rows(Z + 0.01 * rng.standard_normal(Z.shape))
    true = np.repeat(np.arange(K), m)
    candidates = {K: true}
    for k_merge in range(1, K):  # merge the last clusters into cluster k_merge - 1
        candidates[k_merge] = np.minimum(true, k_merge - 1)
    split = true.copy()
    for k in range(K):  # split every cluster in two halves
        members = np.flatnonzero(true == k)
        split[members[rng.permutation(m)[: m // 2]]] = K + k
    candidates[2 * K] = split
    Zb = backend.asarray(Z)
    lengths = {k: float(backend.to_numpy(coding_length(Zb, backend.asarray(y)))) for k, y in candidates.items()}
    assert min(lengths, key=lengths.get) == K, lengths


def test_coding_length_formula(backend):
    Z = gaussian(1, (9, 4))
    labels = np.array([0, 0, 2, 2, 2, 0, 5, 5, 5])  # unused label values contribute nothing
    eps_sq = 0.1
    expected = 0.0
    for k in (0, 2, 5):
        Zk = Z[labels == k]
        mk = len(Zk)
        expected += (mk + 4) / 2 * np.linalg.slogdet(np.eye(4) + 4 / (eps_sq * mk) * Zk.T @ Zk)[1]
        expected -= mk * math.log(mk / 9)
    out = coding_length(backend.asarray(Z), backend.asarray(labels), eps_sq=eps_sq)
    close(backend.to_numpy(out), expected)


# ---- dtype, batches --------------------------------------------------------------------------


def _all_outputs(Z, W, labels, U):
    return {
        "coding_rate": coding_rate(Z),
        "compressed soft": compressed_coding_rate(Z, W),
        "compressed labels": compressed_coding_rate(Z, labels),
        "rate_reduction": rate_reduction(Z, W),
        "subspace": subspace_compressed_rate(Z, U),
        "sparse": sparse_rate_reduction(Z, U),
        "coding_length": coding_length(Z, labels),
        "grad R": coding_rate_grad(Z),
        "grad Rc Z": compressed_coding_rate_grad(Z, W),
        "grad Rc membership": compressed_coding_rate_grad(Z, W, wrt="membership"),
        "grad dR": rate_reduction_grad(Z, labels),
        "grad CRATE": subspace_compressed_rate_grad(Z, U),
    }


@pytest.mark.parametrize("n", [3, 10])  # n < d (Gram forms) and n > d
def test_float32_is_preserved(backend, n):
    rng = np.random.default_rng(0)
    Z32 = backend.asarray(rng.standard_normal((n, 5)), dtype=backend.xp.float32)
    W32 = backend.asarray(rng.random((n, 3)), dtype=backend.xp.float32)
    U32 = backend.asarray(rng.standard_normal((2, 5, 2)), dtype=backend.xp.float32)
    labels = backend.asarray(rng.integers(0, 3, n))
    out64 = _all_outputs(
        backend.xp.astype(Z32, backend.xp.float64),
        backend.xp.astype(W32, backend.xp.float64),
        labels,
        backend.xp.astype(U32, backend.xp.float64),
    )
    for name, value in _all_outputs(Z32, W32, labels, U32).items():
        assert value.dtype == backend.xp.float32, name
        np.testing.assert_allclose(
            backend.to_numpy(value), backend.to_numpy(out64[name]), rtol=2e-4, atol=1e-4, err_msg=name
        )


@pytest.mark.parametrize("n", [3, 10])
def test_leading_batch_dimensions(backend, n):
    rng = np.random.default_rng(1)
    Z = rng.standard_normal((2, 3, n, 5))
    W = rng.random((2, 3, n, 4))
    W[0, 1, :, 2] = 0.0
    W_shared = rng.random((n, 4))
    labels = rng.integers(0, 3, n)
    U = rng.standard_normal((2, 5, 2))
    Zb, Ub, yb = backend.asarray(Z), backend.asarray(U), backend.asarray(labels)
    batched = {
        "R": coding_rate(Zb),
        "Rc W": compressed_coding_rate(Zb, backend.asarray(W)),
        "Rc shared": compressed_coding_rate(Zb, backend.asarray(W_shared)),
        "Rc labels": compressed_coding_rate(Zb, yb),
        "CRATE": subspace_compressed_rate(Zb, Ub),
        "sparse": sparse_rate_reduction(Zb, Ub),
        "length": coding_length(Zb, yb),
        "grad R": coding_rate_grad(Zb),
        "grad Rc": compressed_coding_rate_grad(Zb, backend.asarray(W)),
        "grad Rc membership": compressed_coding_rate_grad(Zb, backend.asarray(W), wrt="membership"),
        "grad CRATE": subspace_compressed_rate_grad(Zb, Ub),
    }
    for i in range(2):
        for j in range(3):
            z = Z[i, j]
            single = {
                "R": coding_rate(z),
                "Rc W": compressed_coding_rate(z, W[i, j]),
                "Rc shared": compressed_coding_rate(z, W_shared),
                "Rc labels": compressed_coding_rate(z, labels),
                "CRATE": subspace_compressed_rate(z, U),
                "sparse": sparse_rate_reduction(z, U),
                "length": coding_length(z, labels),
                "grad R": coding_rate_grad(z),
                "grad Rc": compressed_coding_rate_grad(z, W[i, j]),
                "grad Rc membership": compressed_coding_rate_grad(z, W[i, j], wrt="membership"),
                "grad CRATE": subspace_compressed_rate_grad(z, U),
            }
            for name, value in single.items():
                close(backend.to_numpy(batched[name])[i, j], value, rtol=1e-9, atol=1e-11)


def test_results_stay_in_namespace_and_device(backend):
    Z = backend.asarray(gaussian(0, (6, 3)))
    W = backend.asarray(np.full((6, 2), 0.5))
    for value in (coding_rate(Z), compressed_coding_rate(Z, W), compressed_coding_rate_grad(Z, W)):
        assert array_namespace(value) is array_namespace(Z)
        assert device(value) == device(Z)


# ---- bad input ---------------------------------------------------------------------------------


def _bad_cases(backend):
    xp = backend.xp
    Z = backend.asarray(gaussian(0, (4, 3)))
    W = backend.asarray(np.full((4, 2), 0.5))
    labels = backend.asarray(np.array([0, 1, 1, 0]))
    U = backend.asarray(gaussian(1, (2, 3, 2)))
    nan_Z = backend.asarray(np.array([[np.nan, 0.0], [1.0, 2.0]]))
    inf_W = backend.asarray(np.array([[np.inf, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]))
    return [
        ("Z", ValueError, lambda: coding_rate(nan_Z)),
        ("Z", ValueError, lambda: coding_rate(backend.asarray(np.ones(3)))),
        ("Z", ValueError, lambda: coding_rate(backend.asarray(np.ones((0, 3))))),
        ("Z", TypeError, lambda: coding_rate(backend.asarray(np.ones((3, 3), dtype=np.int64)))),
        ("Z", TypeError, lambda: coding_rate([[1.0, 2.0]])),
        ("eps_sq", ValueError, lambda: coding_rate(Z, eps_sq=0.0)),
        ("eps_sq", ValueError, lambda: coding_rate(Z, eps_sq=-1.0)),
        ("eps_sq", ValueError, lambda: compressed_coding_rate(Z, W, eps_sq=float("inf"))),
        ("eps_sq", ValueError, lambda: coding_length(Z, labels, eps_sq=float("nan"))),
        ("eps_sq", TypeError, lambda: coding_rate(Z, eps_sq="0.5")),
        ("membership", ValueError, lambda: compressed_coding_rate(Z, backend.asarray(np.array([0, 1, 1])))),
        ("membership", ValueError, lambda: compressed_coding_rate(Z, backend.asarray(np.full((5, 2), 0.5)))),
        ("membership", ValueError, lambda: compressed_coding_rate(Z, backend.asarray(np.array([0, -1, 1, 0])))),
        ("membership", ValueError, lambda: compressed_coding_rate(Z, -W)),
        ("membership", ValueError, lambda: compressed_coding_rate(Z, inf_W)),
        ("membership", ValueError, lambda: compressed_coding_rate(Z, backend.asarray(np.ones((4, 0))))),
        ("membership", ValueError, lambda: compressed_coding_rate(Z, backend.asarray(np.zeros((4, 2), int)))),
        ("membership", ValueError, lambda: compressed_coding_rate(Z, backend.asarray(np.ones(4)))),
        ("membership", TypeError, lambda: compressed_coding_rate(Z, xp.astype(labels, xp.bool))),
        ("membership", ValueError, lambda: rate_reduction(Z, backend.asarray(np.full((2, 4, 2), 0.5)))),
        ("membership", TypeError, lambda: compressed_coding_rate(Z, [0, 1, 1, 0])),
        ("wrt", ValueError, lambda: compressed_coding_rate_grad(Z, W, wrt="W")),
        ("expansion_weight", ValueError, lambda: rate_reduction(Z, W, expansion_weight=-1.0)),
        ("expansion_distortion_scale", ValueError, lambda: rate_reduction(Z, W, expansion_distortion_scale=0.0)),
        ("lam", ValueError, lambda: sparse_rate_reduction(Z, U, lam=-0.1)),
        ("bases", ValueError, lambda: subspace_compressed_rate(Z, backend.asarray(gaussian(1, (2, 4, 2))))),
        ("bases", ValueError, lambda: subspace_compressed_rate(Z, backend.asarray(gaussian(1, (3, 2))))),
        ("bases", ValueError, lambda: subspace_compressed_rate_grad(Z, backend.asarray(np.full((2, 3, 2), np.nan)))),
        ("labels", TypeError, lambda: coding_length(Z, W)),
        ("labels", ValueError, lambda: coding_length(Z, backend.asarray(np.array([0, 1, 1])))),
        ("labels", ValueError, lambda: coding_length(Z, backend.asarray(np.array([0, 1, -1, 0])))),
    ]


def test_bad_input_raises_naming_the_argument(backend):
    for name, error, call in _bad_cases(backend):
        with pytest.raises(error, match=name):
            call()


def test_mixed_namespaces_and_devices(backend):
    Z = backend.asarray(gaussian(0, (4, 3)))
    if backend.is_numpy:
        torch = pytest.importorskip("torch")
        other = torch.full((4, 2), 0.5, dtype=torch.float64)
        with pytest.raises(TypeError, match="one array library"):
            compressed_coding_rate(Z, other)
        with pytest.raises(TypeError, match="one array library"):
            subspace_compressed_rate(Z, torch.ones((1, 3, 1), dtype=torch.float64))
        return
    W_np = np.full((4, 2), 0.5)
    with pytest.raises(TypeError, match="one array library"):
        compressed_coding_rate(Z, W_np)
    if backend.name.startswith("array_api_strict"):
        import array_api_strict

        other = "device1" if backend.name.endswith("cpu") else "CPU_DEVICE"
        W = backend.xp.asarray(W_np, device=array_api_strict.Device(other))
        with pytest.raises(ValueError, match="membership"):
            compressed_coding_rate(Z, W)
        labels = backend.xp.asarray(np.array([0, 1, 1, 0]), device=array_api_strict.Device(other))
        with pytest.raises(ValueError, match="labels"):
            coding_length(Z, labels)
