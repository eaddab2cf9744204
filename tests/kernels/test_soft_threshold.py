"""Soft thresholding: proximal-map facts of specs/rate_reduction.md section 3.5 and equality."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from subspacelab.kernels import available_backends, soft_threshold

pytestmark = pytest.mark.cudasim

FLOATS = st.floats(-1e3, 1e3, allow_nan=False, width=64)
X = arrays(np.float64, array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6), elements=FLOATS)
LAM = st.floats(0, 10)


@pytest.mark.parametrize("impl", available_backends())
@given(x=X, lam=LAM, nonneg=st.booleans(), dtype=st.sampled_from([np.float64, np.float32]))
def test_every_implementation_equals_generic(impl, x, lam, nonneg, dtype):
    x = x.astype(dtype)
    ref = soft_threshold(x, lam, nonnegative=nonneg, backend="generic")
    got = soft_threshold(x, lam, nonnegative=nonneg, backend=impl)
    assert got.shape == x.shape and got.dtype == x.dtype
    np.testing.assert_array_equal(got, ref)


@given(x=X, lam=LAM)
def test_is_the_prox_of_l1(x, lam):
    y = soft_threshold(x, lam)
    # optimality of 0.5 (y - x)^2 + lam |y|: y = x - lam sign(y) when y != 0, |x| <= lam else
    x, y = np.atleast_1d(x), np.atleast_1d(y)
    nz = y != 0
    np.testing.assert_allclose(y[nz], x[nz] - lam * np.sign(y[nz]), rtol=1e-12, atol=1e-9)
    assert np.all(np.abs(x[~nz]) <= lam)


@given(x=X, lam=LAM)
def test_nonnegative_variant_is_prox_with_positivity(x, lam):
    y = soft_threshold(x, lam, nonnegative=True)
    assert np.all(y >= 0)
    np.testing.assert_allclose(y, np.maximum(x - lam, 0), rtol=0, atol=0)


@given(x=X, z=X, lam=LAM)
def test_odd_and_one_lipschitz(x, z, lam):
    np.testing.assert_array_equal(soft_threshold(np.negative(x, out=np.empty_like(x)), lam), -soft_threshold(x, lam))
    if x.shape == z.shape:
        d = np.abs(soft_threshold(x, lam) - soft_threshold(z, lam))
        assert np.all(d <= np.abs(x - z) + 1e-9)


@given(x=X, a=LAM, b=LAM)
def test_composition_adds_thresholds(x, a, b):
    np.testing.assert_allclose(
        soft_threshold(soft_threshold(x, a), b), soft_threshold(x, a + b), atol=1e-9
    )


def test_large_threshold_gives_zero(rng):
    x = rng.normal(size=100)
    assert np.all(soft_threshold(x, 1e6) == 0)
    assert np.all(soft_threshold(x, 1e6, nonnegative=True) == 0)


def test_crate_ista_worked_example():
    # spec 3.5: z = (0.5, -0.2, 0.05), D = I, eta = lam = 0.1 => ISTA(z) = ReLU(z - eta*lam)
    z = np.array([0.5, -0.2, 0.05])
    np.testing.assert_allclose(soft_threshold(z, 0.1 * 0.1, nonnegative=True), [0.49, 0.0, 0.04])


def test_every_backend_keeps_namespace_and_device(backend, rng):
    from subspacelab._backend import device

    x = backend.asarray(rng.normal(size=(3, 4)))
    for nonneg in (False, True):
        y = soft_threshold(x, 0.5, nonnegative=nonneg)
        assert type(y) is type(x) and device(y) == device(x)
        expected = np.maximum(backend.to_numpy(x) - 0.5, 0) if nonneg else soft_threshold(backend.to_numpy(x), 0.5)
        np.testing.assert_allclose(backend.to_numpy(y), expected)


def test_array_threshold_broadcasts(backend, rng):
    x = rng.normal(size=(3, 4))
    lam = np.abs(rng.normal(size=(1, 4)))
    y = soft_threshold(backend.asarray(x), backend.asarray(lam))
    np.testing.assert_allclose(backend.to_numpy(y), np.sign(x) * np.maximum(np.abs(x) - lam, 0))


def test_torch_autograd(rng):
    torch = pytest.importorskip("torch")
    x = torch.tensor(rng.normal(size=6), requires_grad=True)
    soft_threshold(x, 0.3).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), (np.abs(x.detach().numpy()) > 0.3).astype(float))


@pytest.mark.parametrize(
    "x, lam, kwargs, exc, match",
    [
        (np.ones(3), -1.0, {}, ValueError, "lam"),
        (np.ones(3), float("nan"), {}, ValueError, "lam"),
        (np.ones(3), "a", {}, TypeError, "lam"),
        (np.array([1.0, np.nan]), 1.0, {}, ValueError, "x"),
        (np.ones(3, dtype=int), 1.0, {}, TypeError, "x"),
        ([1.0, 2.0], 1.0, {}, TypeError, "x"),
        (np.ones(3), np.array([-1.0]), {}, ValueError, "lam"),
        (np.ones(3), 1.0, {"nonnegative": "yes"}, TypeError, "nonnegative"),
        (np.ones(3), np.array([1.0]), {"backend": "numba"}, ValueError, "generic"),
    ],
)
def test_bad_input(x, lam, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        soft_threshold(x, lam, **kwargs)


def test_mixed_namespaces_rejected():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="one array library"):
        soft_threshold(np.ones(3), torch.ones(3))
