"""Fabry–Perot transmittance models: the invariants of spec irca.md section 5.2."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from subspacelab.optics import (
    coefficient_of_finesse,
    finesse,
    model_order,
    phase_difference,
    polynomial_basis,
    transmittance,
    transmittance_derivatives,
)

refl = st.floats(0.0, 0.9)
models = st.sampled_from(["airy", "two_wave", 3, 5])


def _fringe(opd=10.0, n=4096):
    """Wavenumbers covering exactly one fringe period (sigma*opd spans one unit)."""
    s0 = 1.3
    return s0 + np.arange(n) / (n * opd)


@given(r=refl, g=st.floats(0.1, 10.0), psi=st.floats(0.0, 2 * math.pi))
def test_airy_bounds_and_fringe_mean(r, g, psi):
    s = _fringe()
    t = transmittance(s, 10.0, psi, r, g)
    lo, hi = g * (1 - r) / (1 + r), g * (1 + r) / (1 - r)
    assert np.all(t >= lo * (1 - 1e-12)) and np.all(t <= hi * (1 + 1e-12))
    assert np.all(t > 0)
    # mean over one full period of a periodic function = exact by the rectangle rule
    assert np.mean(t) == pytest.approx(g, rel=1e-9)


@given(r=refl, g=st.floats(0.1, 10.0))
def test_two_wave_bounds_and_mean(r, g):
    s = _fringe()
    t = transmittance(s, 10.0, 0.3, r, g, model="two_wave")
    assert np.all(t >= g * (1 - r) ** 2 / (1 + r * r) - 1e-12)
    assert np.all(t <= g * (1 + r) ** 2 / (1 + r * r) + 1e-12)
    assert np.mean(t) == pytest.approx(g, rel=1e-9)
    np.testing.assert_allclose(t, g * (1 + 2 * r / (1 + r * r) * np.cos(2 * np.pi * s * 10.0 - 0.3)), rtol=1e-12)


@given(r=st.floats(0.01, 0.8), n=st.integers(2, 8))
def test_n_wave_mean_is_gain(r, n):
    # the exact mean (1 - R^2N)/(1 - R^2) normalisation; the authors' 1 + R^2N would fail here
    assert np.mean(transmittance(_fringe(), 10.0, 0.0, r, 2.5, model=n)) == pytest.approx(2.5, rel=1e-9)


@given(r=st.floats(0.05, 0.7))
def test_n_wave_converges_to_airy(r):
    s = np.linspace(1.0, 2.0, 500)
    airy = transmittance(s, 7.3, 0.4, r)
    errs = [np.max(np.abs(transmittance(s, 7.3, 0.4, r, model=n) - airy)) for n in (4, 8, 16, 32)]
    for n, e in zip((4, 8, 16, 32), errs):
        assert e <= 8 * r**n / (1 - r) ** 2 + 1e-12
    # the error shrinks as waves are added (the bound above is what fixes its rate; an absolute
    # threshold such as 1e-4 fails near r = 0.7, where 8 r^32 / (1 - r)^2 is about 1e-3)
    assert all(later <= earlier + 1e-15 for earlier, later in zip(errs, errs[1:]))
    assert errs[-1] < errs[0]


@given(r=refl, model=models, psi=st.floats(0.0, 6.0), k=st.integers(-3, 3))
def test_periodicity(r, model, psi, k):
    s = np.linspace(1.0, 2.85, 64)
    t = transmittance(s, 12.0, psi, r, 1.7, model=model)
    np.testing.assert_allclose(transmittance(s, 12.0, psi + 2 * math.pi * k, r, 1.7, model=model), t, atol=1e-9)
    # delta -> delta + k/sigma at each sigma
    np.testing.assert_allclose(transmittance(s, 12.0 + k / s, psi, r, 1.7, model=model), t, atol=1e-9)
    # joint scaling (sigma, delta) -> (a sigma, delta / a)
    np.testing.assert_allclose(transmittance(2.5 * s, 12.0 / 2.5, psi, r, 1.7, model=model), t, atol=1e-9)


@given(model=models, g=st.floats(0.1, 5.0))
def test_zero_reflectivity_gives_gain(model, g):
    s = np.linspace(1.0, 2.0, 33)
    np.testing.assert_allclose(transmittance(s, 5.0, 1.0, 0.0, g, model=model), g, rtol=1e-14)


@given(r=st.floats(0.05, 0.8))
def test_airy_harmonics_are_2r_to_the_n(r):
    n = 256
    phi = 2 * np.pi * np.arange(n) / n
    a, _, _ = transmittance_derivatives(phi, r)
    spec = np.fft.rfft(a) / n
    for h in range(1, 5):
        assert 2 * abs(spec[h]) == pytest.approx(2 * r**h, abs=1e-10)
    assert spec[0].real == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("model", ["airy", "two_wave", 3, 6])
def test_derivatives_match_finite_differences(model):
    rng = np.random.default_rng(1)
    phi = rng.uniform(-10, 10, 50)
    r = rng.uniform(0.05, 0.8, 50)
    a, a_r, a_p = transmittance_derivatives(phi, r, model=model)
    h = 1e-6
    fd_r = (transmittance_derivatives(phi, r + h, model=model)[0] - transmittance_derivatives(phi, r - h, model=model)[0]) / (2 * h)
    fd_p = (transmittance_derivatives(phi + h, r, model=model)[0] - transmittance_derivatives(phi - h, r, model=model)[0]) / (2 * h)
    np.testing.assert_allclose(a_r, fd_r, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(a_p, fd_p, rtol=1e-6, atol=1e-7)


def test_canonical_sign_symmetry():
    """(R, psi) and (-R, psi + pi) give the same curve: hence R >= 0 is canonical."""
    s = np.linspace(1.0, 2.0, 40)
    phi = phase_difference(s, 8.0, 0.7)
    a1, _, _ = transmittance_derivatives(phi, 0.3)
    a2, _, _ = transmittance_derivatives(phi - math.pi, -0.3)
    np.testing.assert_allclose(a1, a2, rtol=1e-12)


def test_polynomial_basis_values():
    s = np.array([1.0, 1.5, 2.0])
    np.testing.assert_allclose(polynomial_basis(s, 3), [[1, -1, 1, -1], [1, 0, -1, 0], [1, 1, 1, 1]])
    np.testing.assert_allclose(polynomial_basis(s, 2, basis="power"), np.stack([s**0, s, s**2], 1))
    # Chebyshev columns are cos(k arccos x)
    x = np.linspace(-1, 1, 7)
    np.testing.assert_allclose(polynomial_basis(x, 5, domain=(-1, 1)), np.cos(np.arange(6)[None] * np.arccos(x)[:, None]), atol=1e-12)


def test_finesse_values():
    assert finesse(0.25) == pytest.approx(math.pi * 0.5 / 0.75)
    assert coefficient_of_finesse(0.25) == pytest.approx(1.0 / 0.5625)


def test_phase_is_float64_for_float32_input():
    s = np.linspace(1.0, 2.88, 10, dtype=np.float32)
    phi = phase_difference(s, np.float32(126.0))
    assert phi.dtype == np.float64
    np.testing.assert_allclose(phi, 2 * np.pi * s.astype(np.float64) * 126.0, rtol=1e-15)


def test_backends_agree(backend):
    s = np.linspace(1.0, 2.0, 20)
    r = 0.2 + 0.05 * s
    for model in ("airy", 3):
        ref = transmittance(s, 6.0, 0.5, r, 1.5, model=model)
        out = transmittance(backend.asarray(s), 6.0, 0.5, backend.asarray(r), 1.5, model=model)
        np.testing.assert_allclose(backend.to_numpy(out), ref, rtol=1e-12)
    b = polynomial_basis(backend.asarray(s), 4)
    np.testing.assert_allclose(backend.to_numpy(b), polynomial_basis(s, 4), rtol=1e-12)


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(reflectivity=1.0), ValueError, "reflectivity"),
        (dict(reflectivity=-0.1), ValueError, "reflectivity"),
        (dict(model="fabry"), ValueError, "model"),
        (dict(model=1), ValueError, "N >= 2"),
        (dict(model=2.5), TypeError, "model"),
    ],
)
def test_bad_input(kwargs, err, match):
    with pytest.raises(err, match=match):
        transmittance(np.linspace(1, 2, 5), 3.0, **kwargs)


def test_bad_basis_input():
    with pytest.raises(ValueError, match="basis"):
        polynomial_basis(np.ones(3), 2, basis="legendre")
    with pytest.raises(ValueError, match="degree"):
        polynomial_basis(np.ones(3), -1)
    with pytest.raises(ValueError, match="1-dimensional"):
        polynomial_basis(np.ones((3, 2)), 1)
    with pytest.raises(TypeError, match="array"):
        polynomial_basis([1.0, 2.0], 1)
    assert model_order("airy") == 0 and model_order("two_wave") == 2 and model_order(4) == 4
