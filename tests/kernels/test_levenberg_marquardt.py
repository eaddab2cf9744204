"""Batched bounded Levenberg–Marquardt kernel: every implementation against the generic one."""

import math
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from subspacelab.kernels import available_backends, levenberg_marquardt
from subspacelab.kernels.levenberg_marquardt import _evaluate
from subspacelab.optics import polynomial_basis, transmittance

CUDASIM = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def problem(n_items=6, n_src=80, deg_r=1, deg_g=2, noise=0.0, seed=0, r0=0.25, model="airy"):
    rng = np.random.default_rng(seed)
    s = np.linspace(1.0, 2.85, n_src)
    dom = (1.0, 2.85)
    br = polynomial_basis(s, deg_r, domain=dom)
    bg = polynomial_basis(s, deg_g, domain=dom)
    ones = np.ones((n_src, 1))
    opd = rng.uniform(3.0, 20.0, n_items)
    psi = rng.uniform(0.0, 2 * np.pi, n_items)
    cr = np.zeros((n_items, deg_r + 1))
    cr[:, 0] = r0 * (1.0 + 0.2 * rng.uniform(-1.0, 1.0, n_items))
    if deg_r:
        cr[:, 1] = 0.5 * cr[:, 0] * rng.uniform(-1.0, 1.0, n_items)
    cg = np.zeros((n_items, deg_g + 1))
    cg[:, 0] = rng.uniform(0.5, 2.0, n_items)
    if deg_g:
        cg[:, 1] = 0.1 * rng.standard_normal(n_items)
    truth = np.concatenate([opd[:, None], psi[:, None], cr, cg], axis=1)
    y = transmittance(s, opd[:, None], psi[:, None], cr @ br.T, cg @ bg.T, model=model)
    y = y * (1 + noise * rng.standard_normal(y.shape))
    start = truth.copy()
    start[:, 0] += 0.004 * rng.standard_normal(n_items)
    start[:, 1] += 0.05 * rng.standard_normal(n_items)
    start[:, 2] = r0
    start[:, 3 : 2 + deg_r + 1] = 0.0
    start[:, 2 + deg_r + 1 :] *= 0.9
    return y, s[:, None], ones, br, bg, start, truth


def _fast_backends():
    out = [b for b in available_backends() if b != "generic"]
    return out


@pytest.mark.parametrize("impl", _fast_backends())
@settings(max_examples=6 if CUDASIM else 15)
@given(
    seed=st.integers(0, 10_000),
    n_iter=st.integers(1, 4),
    deg_r=st.integers(0, 2),
    model=st.sampled_from(["airy", "two_wave", 3]),
    bounds=st.booleans(),
    r0=st.sampled_from([0.02, 0.25]),
)
def test_backends_match_generic_step_by_step(impl, seed, n_iter, deg_r, model, bounds, r0):
    """After k iterations every implementation holds the same iterate (same algorithm)."""
    n_items = 3 if impl == "cuda" else 8
    y, md, bp, br, bg, start, _ = problem(n_items, 40, deg_r=deg_r, noise=0.02, seed=seed, r0=r0, model=model)
    w = (np.random.default_rng(seed).uniform(size=y.shape) > 0.1).astype(float)
    kw = dict(weights=w, model=model, bounds=bounds, max_iter=n_iter)
    ref = levenberg_marquardt(y, md, bp, br, bg, start, backend="generic", **kw)
    out = levenberg_marquardt(y, md, bp, br, bg, start, backend=impl, **kw)
    np.testing.assert_allclose(out.params, ref.params, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(out.cost, ref.cost, rtol=1e-7, atol=1e-12)
    np.testing.assert_array_equal(out.n_iter, ref.n_iter)
    np.testing.assert_array_equal(out.status, ref.status)


@pytest.mark.parametrize("impl", available_backends())
def test_exact_recovery_noiseless(impl):
    n = 3 if impl == "cuda" else 12
    y, md, bp, br, bg, start, truth = problem(n, 120)
    res = levenberg_marquardt(y, md, bp, br, bg, start, backend=impl)
    est = res.params.copy()
    est[:, 1] = np.mod(est[:, 1], 2 * np.pi)
    np.testing.assert_allclose(est, truth, atol=1e-8)
    assert np.all(res.status == 1)


def test_bounds_respected_and_active():
    """True R dips below zero: the bounded fit keeps R(sigma_j) in [0, R_max] at every source
    and touches 0, while the unbounded one goes negative."""
    y, md, bp, br, bg, start, truth = problem(10, 100, deg_r=1, r0=0.02, noise=0.02, seed=3)
    start[:, 2] = 0.05
    y2 = y.copy()
    # make the reflectivity slope push R negative on one side
    s = md[:, 0]
    r_true = 0.02 + 0.1 * (s - 1.9)
    y2 = transmittance(s, truth[:, :1], truth[:, 1:2], np.clip(r_true, 0, None), truth[:, 4:] @ bg.T)
    y2 = y2 * (1 + 0.02 * np.random.default_rng(0).standard_normal(y2.shape))
    rb = levenberg_marquardt(y2, md, bp, br, bg, start, reflectivity_max=0.5)
    ru = levenberg_marquardt(y2, md, bp, br, bg, start, bounds=False)
    rv_b = rb.params[:, 2:4] @ br.T
    rv_u = ru.params[:, 2:4] @ br.T
    assert rv_b.min() >= -1e-15 and rv_b.max() <= 0.5 + 1e-15  # up to rounding of B_R @ c_R
    assert rv_u.min() < -1e-3
    assert np.all(rb.cost >= ru.cost * (1 - 1e-9))


def test_upper_bound():
    y, md, bp, br, bg, start, truth = problem(5, 100, deg_r=0, r0=0.6, seed=4)
    res = levenberg_marquardt(y, md, bp, br, bg, start * [1, 1, 0.5, 1, 1, 1], reflectivity_max=0.4)
    np.testing.assert_allclose(res.params[:, 2], 0.4, atol=1e-12)
    assert np.all(res.params[:, 2] <= 0.4)


def test_analytic_jacobian_matches_finite_differences():
    import array_api_compat.numpy as xp

    y, md, bp, br, bg, start, _ = problem(4, 60, deg_r=2, noise=0.05)
    widths = [1, 1, 3, 3]
    sw = np.ones_like(y)
    for order in (0, 2, 4):
        _, h, grad = _evaluate(start, y, sw, md, bp, br, bg, order, widths, xp, True)
        eps = 1e-6
        fd = np.zeros_like(start)
        for k in range(start.shape[1]):
            tp, tm = start.copy(), start.copy()
            tp[:, k] += eps
            tm[:, k] -= eps
            cp, _, _ = _evaluate(tp, y, sw, md, bp, br, bg, order, widths, xp, False)
            cm, _, _ = _evaluate(tm, y, sw, md, bp, br, bg, order, widths, xp, False)
            fd[:, k] = (cp - cm) / (2 * eps)
        np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-6)


def test_matches_scipy_per_row_on_well_posed_problems():
    from scipy.optimize import least_squares

    y, md, bp, br, bg, start, truth = problem(6, 150, noise=0.01, seed=7)
    res = levenberg_marquardt(y, md, bp, br, bg, start, bounds=False)
    for i in range(y.shape[0]):

        def fun(x, i=i):
            return transmittance(md[:, 0], x[0], x[1], br @ x[2:4], bg @ x[4:]) - y[i]

        sol = least_squares(fun, start[i], xtol=1e-14, ftol=1e-14, gtol=1e-14)
        np.testing.assert_allclose(res.params[i], sol.x, rtol=1e-6, atol=1e-7)
        assert 0.5 * np.sum(fun(res.params[i]) ** 2) <= 0.5 * np.sum(fun(sol.x) ** 2) * (1 + 1e-8)


def test_fixed_parameters_stay():
    y, md, bp, br, bg, start, truth = problem(4, 80)
    free = np.ones(start.shape[1], dtype=bool)
    free[4:] = False  # gain fixed
    for impl in available_backends():
        if impl == "cuda":
            continue
        res = levenberg_marquardt(y, md, bp, br, bg, start, free=free, backend=impl)
        np.testing.assert_array_equal(res.params[:, 4:], start[:, 4:])


def test_namespaces_and_devices(backend):
    y, md, bp, br, bg, start, truth = problem(4, 60)
    args = [backend.asarray(a) for a in (y, md, bp, br, bg, start)]
    res = levenberg_marquardt(*args, backend="auto")
    assert type(res.params) is type(args[0])
    out = backend.to_numpy(res.params)
    out[:, 1] = np.mod(out[:, 1], 2 * np.pi)
    np.testing.assert_allclose(out, truth, atol=1e-8)


def test_batch_independence():
    y, md, bp, br, bg, start, _ = problem(10, 80, noise=0.03)
    full = levenberg_marquardt(y, md, bp, br, bg, start)
    part = levenberg_marquardt(y[3:7], md, bp, br, bg, start[3:7])
    np.testing.assert_allclose(part.params, full.params[3:7], rtol=1e-12, atol=1e-12)


def test_zero_items_and_max_iter_zero():
    y, md, bp, br, bg, start, _ = problem(3, 40)
    res = levenberg_marquardt(y[:0], md, bp, br, bg, start[:0])
    assert res.params.shape == (0, start.shape[1])
    res = levenberg_marquardt(y, md, bp, br, bg, start, max_iter=0)
    np.testing.assert_array_equal(res.params, start)
    assert np.all(res.status == 0)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda a: a.update(y=a["y"][0]), "2-dimensional"),
        (lambda a: a.update(md=a["md"][:-1]), "opd_design"),
        (lambda a: a.update(start=a["start"][:, :-1]), "params0"),
        (lambda a: a.update(y=np.where(np.arange(40) == 3, np.nan, a["y"])), "NaN"),
        (lambda a: a.update(start=a["start"] * [1, 1, -1, 1, 1, 1]), "bounds"),
    ],
)
def test_bad_input(change, match):
    y, md, bp, br, bg, start, _ = problem(3, 40, deg_r=0, deg_g=2)
    a = dict(y=y, md=md, bp=bp, br=br, bg=bg, start=start)
    change(a)
    with pytest.raises(ValueError, match=match):
        levenberg_marquardt(a["y"], a["md"], a["bp"], a["br"], a["bg"], a["start"])


def test_bad_options():
    y, md, bp, br, bg, start, _ = problem(2, 30, deg_r=0)
    with pytest.raises(ValueError, match="reflectivity_max"):
        levenberg_marquardt(y, md, bp, br, bg, start, reflectivity_max=1.0)
    with pytest.raises(ValueError, match="weights"):
        levenberg_marquardt(y, md, bp, br, bg, start, weights=-np.ones_like(y))
    with pytest.raises(ValueError, match="backend"):
        levenberg_marquardt(y, md, bp, br, bg, start, backend="fortran")
    with pytest.raises(TypeError, match="array"):
        levenberg_marquardt(y.tolist(), md, bp, br, bg, start)


@pytest.mark.cudasim
@pytest.mark.skipif(not CUDASIM, reason="run with NUMBA_ENABLE_CUDASIM=1 (or on a GPU)")
def test_cuda_simulator_runs_one_item():
    y, md, bp, br, bg, start, truth = problem(2, 30, deg_r=0, deg_g=1)
    ref = levenberg_marquardt(y, md, bp, br, bg, start, backend="generic", max_iter=5)
    out = levenberg_marquardt(y, md, bp, br, bg, start, backend="cuda", max_iter=5)
    np.testing.assert_allclose(out.params, ref.params, rtol=1e-9, atol=1e-11)
    assert math.isfinite(float(out.cost[0]))
