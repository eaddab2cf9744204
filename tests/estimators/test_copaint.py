"""CoPaintInpainter and the DDIM inpainting samplers (specs/diffusion_flow.md section 5)."""

import array_api_compat.numpy
import numpy as np
import pytest

from subspacelab import CoPaintInpainter, MoLRGDenoiser
from subspacelab.diffusion import GaussianDenoiser
from subspacelab.diffusion.copaint import (
    _AnalyticPrior,
    _x0,
    _x0_and_vjp,
    copaint,
    ddnm_inpaint,
    dps_inpaint,
    projection_inpaint,
    replacement_inpaint,
    time_travel_walk,
)


def _lowrank(rng, n=400, p=12, r=3):
    return rng.normal(size=(n, r)) @ rng.normal(size=(r, p)) / np.sqrt(r) + 0.05 * rng.normal(size=(n, p))


def _mask(p=12, hidden=(4, 5, 6, 7)):
    m = np.ones(p)
    m[list(hidden)] = 0
    return m


@pytest.mark.parametrize("kind", ["gaussian", "molrg"])
def test_closed_form_vjp_matches_finite_differences(kind, rng):
    X = _lowrank(rng)
    D = GaussianDenoiser(n_components=4).fit(X) if kind == "gaussian" else \
        MoLRGDenoiser(n_components=2, subspace_dim=3, center=True, n_init=2, random_state=0).fit(X)
    prior = _AnalyticPrior(D, array_api_compat.numpy, "cpu", np.float64)
    x = rng.normal(size=(3, 12))
    g = rng.normal(size=(3, 12)) * _mask()
    v = rng.normal(size=(3, 12))
    for a, s in [(0.3, 0.95), (0.8, 0.6), (0.99, 0.14)]:
        _, vjp = _x0_and_vjp(prior, x, a, s, g)
        h = 1e-5
        jv = (_x0(prior, x + h * v, a, s) - _x0(prior, x - h * v, a, s)) / (2 * h)
        np.testing.assert_allclose(np.sum(vjp * v, axis=1), np.sum(g * jv, axis=1), rtol=1e-6, atol=1e-8)


def test_torch_autograd_vjp_matches_finite_differences(rng):
    pytest.importorskip("torch")
    from subspacelab.diffusion import TorchDenoiser
    from subspacelab.diffusion.copaint import _prior

    X = rng.random((32, 8, 8))
    D = TorchDenoiser(base_channels=4, channel_mult=(1,), max_steps=3, batch_size=8, n_threads=1, random_state=0).fit(X)
    prior = _prior(D, array_api_compat.numpy, "cpu", np.float64)
    x = rng.normal(size=(2, 64))
    g, v = rng.normal(size=(2, 64)), rng.normal(size=(2, 64))
    _, vjp = _x0_and_vjp(prior, x, 0.8, 0.6, g)
    h = 1e-2
    jv = (_x0(prior, x + h * v, 0.8, 0.6) - _x0(prior, x - h * v, 0.8, 0.6)) / (2 * h)
    np.testing.assert_allclose(np.sum(vjp * v, axis=1), np.sum(g * jv, axis=1), rtol=2e-2, atol=1e-3)


def test_revealed_pixels_are_reproduced(rng):
    """The mismatch on revealed pixels is driven to ~0 at the end (exact Gaussian prior)."""
    X = _lowrank(rng, n=600)
    D = GaussianDenoiser(n_components=3).fit(X[:500])
    y, m = X[500:510], np.broadcast_to(_mask(), (10, 12)).copy()
    var = float(np.mean(X.var(axis=0)))
    out, info = copaint(D, y, m, n_steps=30, random_state=0)
    assert info["mismatch"] < 1e-3 * var
    assert np.mean((out - y)[:, m[0] > 0] ** 2) == pytest.approx(info["mismatch"])
    # the mismatch decreases along the chain and is far below that of no optimisation
    hist = info["loss_history"]
    assert hist[-1] < 0.1 * hist[len(hist) // 2]
    _, plain = copaint(D, y, m, n_steps=30, n_grad_steps=0, random_state=0)
    assert info["mismatch"] < 1e-2 * plain["mismatch"]


def test_copaint_moves_hidden_pixels_coherently(rng):
    """Low-rank data: the hidden pixels are determined by the revealed ones, and CoPaint finds them."""
    X = rng.normal(size=(500, 2)) @ rng.normal(size=(2, 12))
    D = GaussianDenoiser(n_components=2).fit(X[:400])
    y, m = X[400:405], np.broadcast_to(_mask(), (5, 12)).copy()
    out, _ = copaint(D, y, m, n_steps=30, random_state=0)
    assert np.max(np.abs(out - y)) < 1e-2 * np.std(X)


def test_time_travel_walk():
    assert time_travel_walk(5, 0, 2) == [(4, 3), (3, 2), (2, 1), (1, 0)]
    assert time_travel_walk(5, 2, 1) == time_travel_walk(5, 0, 2)
    walk = time_travel_walk(6, 2, 2)  # marks 0 and 2, one revisit each
    assert walk == [(5, 4), (4, 3), (3, 2), (2, 3), (3, 4), (4, 3), (3, 2), (2, 1), (1, 0), (0, 1), (1, 2),
                    (2, 1), (1, 0)]
    down = sum(j < i for i, j in time_travel_walk(250, 10, 2))
    up = sum(j > i for i, j in time_travel_walk(250, 10, 2))
    assert (down, up) == (249 + 240, 240)  # the reference's 490 reverse (incl. the last) and 240 undo steps


def test_travel_length_zero_is_plain_copaint(rng):
    X = _lowrank(rng)
    D = GaussianDenoiser(n_components=3).fit(X)
    y, m = X[:4], np.broadcast_to(_mask(), (4, 12)).copy()
    plain, i0 = copaint(D, y, m, n_steps=20, time_travel=False, random_state=1)
    zero, i1 = copaint(D, y, m, n_steps=20, time_travel=True, travel_length=0, random_state=1)
    once, _ = copaint(D, y, m, n_steps=20, time_travel=True, travel_repeat=1, random_state=1)
    tt, i2 = copaint(D, y, m, n_steps=20, time_travel=True, travel_length=5, random_state=1)
    np.testing.assert_array_equal(plain, zero)
    np.testing.assert_array_equal(plain, once)
    assert i0["nfe"] == i1["nfe"] < i2["nfe"]
    assert not np.allclose(plain, tt)


def test_estimator_deterministic_and_shapes(rng):
    X = _lowrank(rng).reshape(-1, 3, 4)
    inp = CoPaintInpainter(prior=GaussianDenoiser(n_components=3), n_steps=15, random_state=0).fit(X[:300])
    mask = _mask().reshape(3, 4)
    a = inp.predict(X[300:305] * mask, mask)
    b = inp.predict(X[300:305] * mask, mask)
    assert a.shape == (5, 3, 4)
    np.testing.assert_array_equal(a, b)
    c = inp.set_params(random_state=1).predict(X[300:305] * mask, mask)
    assert not np.allclose(a, c)
    # NaN marks hidden pixels when no mask is given
    Xn = X[300:305].copy()
    Xn[:, mask == 0] = np.nan
    np.testing.assert_array_equal(inp.predict(Xn), c)
    # a per-sample mask equal to the shared one gives the same result
    np.testing.assert_array_equal(inp.predict(X[300:305] * mask, np.broadcast_to(mask, (5, 3, 4))), c)
    assert inp.score(X[300:305] * mask, X[300:305], mask) > 10.0


def test_all_revealed_and_all_hidden(rng):
    X = _lowrank(rng)
    inp = CoPaintInpainter(n_steps=10, random_state=0).fit(X)
    np.testing.assert_array_equal(inp.predict(X[:3], np.ones(12)), X[:3])
    rows = np.stack([np.ones(12), _mask(), np.ones(12)])
    mixed = inp.predict(X[:3], rows)
    np.testing.assert_array_equal(mixed[[0, 2]], X[[0, 2]])
    assert not np.array_equal(mixed[1], X[1])
    out = inp.predict(X[:3], np.zeros(12))  # unconditional samples of the prior
    plain = inp.set_params(n_grad_steps=0).predict(X[:3], np.zeros(12))
    np.testing.assert_allclose(out, plain)
    assert np.all(np.isfinite(out))
    with pytest.raises(ValueError, match="no hidden pixels"):
        inp.score(X[:3], X[:3], np.ones(12))


@pytest.mark.parametrize(
    "mask, exc, match",
    [(np.ones(5), ValueError, "mask must have shape"), (np.ones((3, 3, 4)), ValueError, "mask must have shape"),
     (np.full(12, 0.5), ValueError, "only 0 and 1"), ([1] * 12, TypeError, "mask")],
)
def test_bad_mask(mask, exc, match, rng):
    X = _lowrank(rng)
    inp = CoPaintInpainter(n_steps=5, random_state=0).fit(X)
    with pytest.raises(exc, match=match):
        inp.predict(X[:3], mask)


def test_bad_input(rng):
    X = _lowrank(rng)
    inp = CoPaintInpainter(n_steps=5, random_state=0).fit(X)
    Xn = X[:3].copy()
    Xn[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN at revealed"):
        inp.predict(Xn, np.ones(12))
    with pytest.raises(ValueError, match="features"):
        inp.predict(X[:3, :5], np.ones(5))
    with pytest.raises(ValueError, match="clean images"):
        inp.score(X[:3], X[:3, 0], _mask())
    with pytest.raises(TypeError, match="prior"):
        CoPaintInpainter(prior="gauss").fit(X)
    with pytest.raises(ValueError, match="n_steps"):
        CoPaintInpainter(n_steps=0).fit(X)
    with pytest.raises(ValueError, match="lr"):
        CoPaintInpainter(lr=-1.0).fit(X)
    with pytest.raises(ValueError):
        CoPaintInpainter().fit(np.full((5, 12), np.nan))


def test_baselines_keep_revealed_pixels(rng):
    X = _lowrank(rng)
    D = GaussianDenoiser(n_components=3).fit(X[:300])
    y, m = X[300:304], np.broadcast_to(_mask(), (4, 12)).copy()
    for f in (replacement_inpaint, projection_inpaint, ddnm_inpaint):
        out, info = f(D, y, m, n_steps=20, random_state=0)
        np.testing.assert_allclose(out[:, m[0] > 0], y[:, m[0] > 0], atol=1e-10)
        assert info["nfe"] == 20 and info["mismatch"] < 1e-18
        assert np.all(np.isfinite(out))


def test_every_backend(backend, rng):
    from sklearn import config_context

    X = _lowrank(rng, n=200)
    mask = _mask()
    ref = CoPaintInpainter(prior=GaussianDenoiser(n_components=3), n_steps=8, travel_length=3,
                           random_state=0).fit(X).predict(X[:3] * mask, mask)
    with config_context(array_api_dispatch=True):
        inp = CoPaintInpainter(prior=GaussianDenoiser(n_components=3), n_steps=8, travel_length=3, random_state=0)
        out = inp.fit(backend.asarray(X)).predict(backend.asarray(X[:3] * mask), backend.asarray(mask))
    assert type(out) is type(backend.asarray(X))
    np.testing.assert_allclose(backend.to_numpy(out), ref, atol=1e-6)


def test_torch_prior_runs_and_reduces_mismatch(rng):
    pytest.importorskip("torch")
    from subspacelab.diffusion import TorchDenoiser

    X = rng.random((32, 8, 8))
    prior = TorchDenoiser(base_channels=4, channel_mult=(1,), max_steps=5, batch_size=16, n_threads=1)
    inp = CoPaintInpainter(prior=prior, n_steps=5, time_travel=False, random_state=0).fit(X)
    mask = np.ones((8, 8))
    mask[2:6, 2:6] = 0
    _, info = inp._predict(X[:2] * mask, mask, "predict")
    _, plain = inp.set_params(n_grad_steps=0)._predict(X[:2] * mask, mask, "predict")
    assert info["mismatch"] < plain["mismatch"]


def test_torch_prior_uses_the_denoisers_threads(rng):
    """CoPaint's forward and VJP passes run with the TorchDenoiser's ``n_threads`` (restored after)."""
    torch = pytest.importorskip("torch")
    from subspacelab.diffusion import TorchDenoiser

    X = rng.random((32, 8, 8))
    D = TorchDenoiser(base_channels=4, channel_mult=(1,), max_steps=2, batch_size=8, n_threads=1, random_state=0).fit(X)
    seen = []
    D.network_.register_forward_pre_hook(lambda module, args: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # a setting other than the denoiser's
    try:
        mask = np.ones((2, 64))
        mask[:, 20:40] = 0
        copaint(D, X[:2].reshape(2, 64) * mask, mask, n_steps=3, time_travel=False, random_state=0)
        dps_inpaint(D, X[:2].reshape(2, 64) * mask, mask, n_steps=3, random_state=0)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen and set(seen) == {1}


@pytest.mark.parametrize("fn", [copaint, replacement_inpaint, dps_inpaint])
def test_unfitted_prior_is_refused(fn):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        fn(GaussianDenoiser(), np.zeros((1, 12)), _mask()[None, :], n_steps=3)


def test_mixed_namespaces_are_refused(rng):
    torch = pytest.importorskip("torch")
    from sklearn import config_context

    X = _lowrank(rng, n=100)
    with config_context(array_api_dispatch=True):
        inp = CoPaintInpainter(n_steps=5, random_state=0).fit(X)
        with pytest.raises(ValueError, match="same namespace"):
            inp.predict(torch.asarray(X[:2]), torch.asarray(_mask()))
        with pytest.raises(TypeError, match="mask must be an array of X's namespace"):
            inp.predict(X[:2], torch.asarray(_mask()))


def test_demo_row():
    from subspacelab.estimators.copaint import demo_row

    row = demo_row()
    assert row["value"] < row["baseline_value"]


def test_inpainting_masks():
    from subspacelab.operators import inpainting_mask

    box = inpainting_mask("box", (8, 8))
    assert box.shape == (8, 8) and box.sum() == 64 - 16 and box[3, 3] == 0 and box[0, 0] == 1
    half = inpainting_mask("half", (6, 8), 3)
    assert half.shape == (3, 6, 8) and np.all(half[:, :, :4] == 1) and np.all(half[:, :, 4:] == 0)
    s1 = inpainting_mask("strokes", (16, 16), 4, random_state=0)
    np.testing.assert_array_equal(s1, inpainting_mask("strokes", (16, 16), 4, random_state=0))
    assert set(np.unique(s1)) == {0.0, 1.0}
    assert np.all((s1 == 0).sum(axis=(1, 2)) > 0) and np.all((s1 == 1).sum(axis=(1, 2)) > 0)
    with pytest.raises(ValueError, match="kind"):
        inpainting_mask("circle", (8, 8))
    with pytest.raises(ValueError, match="shape"):
        inpainting_mask("box", (8,))


def test_dps_guidance_reduces_the_mismatch(rng):
    X = rng.normal(size=(400, 2)) @ rng.normal(size=(2, 12))
    D = GaussianDenoiser(n_components=2).fit(X[:300])
    y, m = X[300:306], np.broadcast_to(_mask(), (6, 12)).copy()
    out, info = dps_inpaint(D, y, m, n_steps=30, step_size=1.0, random_state=0)
    _, free = dps_inpaint(D, y, m, n_steps=30, step_size=0.0, random_state=0)  # unconditional ancestral sampler
    assert info["nfe"] == 2 * 29 + 1
    assert np.all(np.isfinite(out))
    assert info["mismatch"] < 0.1 * free["mismatch"]


@pytest.mark.parametrize("f", [copaint, replacement_inpaint, projection_inpaint, ddnm_inpaint, dps_inpaint])
def test_sampler_functions_bad_input(f, rng):
    X = _lowrank(rng, n=50)
    D = GaussianDenoiser(n_components=3).fit(X)
    y, m = X[:2], np.broadcast_to(_mask(), (2, 12)).copy()
    with pytest.raises(ValueError, match="shape of y"):
        f(D, y, m[:, :5])
    with pytest.raises(ValueError, match="only 0 and 1"):
        f(D, y, 0.5 * m)
    bad = y.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        f(D, bad, m)
    with pytest.raises(ValueError, match="n_steps"):
        f(D, y, m, n_steps=0)
    with pytest.raises(TypeError, match="closed-form"):
        f(object(), y, m)
    bad[0, 0] = 0.0
    bad[0, 5] = np.nan  # hidden pixel: ignored
    out, _ = f(D, bad, m, n_steps=3)
    assert np.all(np.isfinite(out))
