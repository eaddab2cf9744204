"""BlindHarmonizer: training lowers the NLL; the harmonisation loop uses only f and f^-1 and
equals the spec's analytic gradients (checked against autograd on a linear flow); spec §8
invariants 18; contrast inversion never gives a negatively correlated output; determinism;
array-API inference equal to torch on every backend; bad input."""

import numpy as np
import pytest
import sklearn

torch = pytest.importorskip("torch")

import array_api_compat.numpy as xnp  # noqa: E402

from subspacelab import BlindHarmonizer  # noqa: E402
from subspacelab.datasets import DomainShift, make_spin_echo_phantoms  # noqa: E402
from subspacelab.estimators import blind_harmony as bh  # noqa: E402
from subspacelab.metrics import psnr  # noqa: E402

# beta_fidelity: the reference's 1000 is meant for 144 x 176 images; 16 x 16 needs ~80x less.
# alpha, beta_edge: the reference's weights, so that the tests exercise the flow's latent shrink
# (the estimator's defaults switch both off).
TINY = dict(levels=2, steps_per_level=2, hidden_channels=8, batch_size=8, learning_rate=3e-3, beta_fidelity=10.0,
            alpha=1e-3, beta_edge=1e-3, n_threads=1, random_state=0)


@pytest.fixture(scope="module")
def phantoms():
    return make_spin_echo_phantoms(24, 16, scanner="A", random_state=0)


@pytest.fixture(scope="module")
def fitted(phantoms):
    return BlindHarmonizer(max_steps=60, **TINY).fit(phantoms[:20])


# ----------------------------------------------------------------------------- training

def test_training_lowers_negative_log_likelihood(phantoms, fitted):
    curve = np.asarray(fitted.loss_curve_)
    assert curve.shape == (60,) and np.all(np.isfinite(curve))
    assert curve[-10:].mean() < curve[:10].mean() - 0.5  # bits/dim
    untrained = BlindHarmonizer(max_steps=1, **TINY).fit(phantoms[:20])
    held_out = phantoms[20:]
    assert fitted.score_samples(held_out).mean() > untrained.score_samples(held_out).mean()
    # target-domain images are more likely than contrast-inverted ones
    inverted = DomainShift("inversion", random_state=0)(held_out)
    assert fitted.score_samples(held_out).mean() > fitted.score_samples(inverted).mean()


def test_determinism_under_random_state(phantoms, fitted):
    again = BlindHarmonizer(max_steps=60, **TINY).fit(phantoms[:20])
    np.testing.assert_array_equal(again.loss_curve_, fitted.loss_curve_)
    src = DomainShift("gamma", random_state=0)(phantoms[20:])
    np.testing.assert_array_equal(again.transform(src), fitted.transform(src))
    other = BlindHarmonizer(max_steps=60, **{**TINY, "random_state": 1}).fit(phantoms[:20])
    assert not np.array_equal(other.loss_curve_, fitted.loss_curve_)
    np.testing.assert_array_equal(fitted.sample(3, random_state=5), fitted.sample(3, random_state=5))


def test_attributes_sample_and_shapes(phantoms, fitted):
    assert fitted.image_shape_ == (1, 16, 16)
    np.testing.assert_allclose(fitted.target_mean_, bh.minmax_normalize(phantoms[:20]).mean(0))
    s = fitted.sample(4, random_state=0)
    assert s.shape == (4, 16, 16) and s.min() >= 0 and s.max() <= 1
    flat = BlindHarmonizer(image_shape=(16, 16), max_steps=2, **TINY).fit(phantoms[:8].reshape(8, -1))
    assert flat.transform(phantoms[8:10].reshape(2, -1)).shape == (2, 256)
    assert fitted.transform(phantoms[20:22]).dtype == np.float64
    assert fitted.transform(phantoms[20:22].astype(np.float32)).dtype == np.float32


def test_array_api_inference_equals_torch(phantoms, fitted):
    src = DomainShift("bias_field", random_state=0)(phantoms[20:])
    b = fitted.transform(src)
    score = fitted.score_samples(src)
    try:
        a = fitted.set_params(inference="array_api").transform(src)
        np.testing.assert_allclose(a, b, atol=1e-4)
        np.testing.assert_allclose(fitted.score_samples(src), score, rtol=1e-5)
        np.testing.assert_allclose(fitted.sample(2, random_state=0), fitted.set_params(inference="torch").sample(
            2, random_state=0), atol=1e-4)
    finally:
        fitted.set_params(inference="torch")


def test_backends(backend, phantoms):
    X = backend.asarray(phantoms[:8])
    with sklearn.config_context(array_api_dispatch=True):
        est = BlindHarmonizer(max_steps=3, **TINY).fit(X)
        assert type(est.target_mean_) is type(X)
        out = est.transform(X[:2, ...])
        assert type(out) is type(X) and tuple(out.shape) == (2, 16, 16)
        ref = BlindHarmonizer(max_steps=3, **TINY).fit(phantoms[:8]).transform(phantoms[:2])
        np.testing.assert_allclose(backend.to_numpy(out), ref, atol=1e-4)
        assert tuple(est.score_samples(X[:2, ...]).shape) == (2,)
        assert type(est.sample(2, random_state=0)) is type(X)


# --------------------------------------------------------------- the harmonisation loop

def _linear_flow(D, seed=0):
    rng = np.random.default_rng(seed)
    A = np.eye(D) + 0.2 * rng.standard_normal((D, D)) / np.sqrt(D)
    b = 0.1 * rng.standard_normal(D)
    A_inv = np.linalg.inv(A)
    calls = {"encode": 0, "decode": 0}

    def encode(y):
        calls["encode"] += 1
        return y.reshape(y.shape[0], -1) @ A.T + b

    def decode(z):
        calls["decode"] += 1
        return ((z - b) @ A_inv.T).reshape(-1, 1, 6, 6)

    return encode, decode, A, b, calls


def test_analytic_gradients_equal_autograd():
    rng = np.random.default_rng(0)
    x = rng.random((2, 1, 6, 6))
    y = rng.random((2, 1, 6, 6))
    masks = bh.edge_masks(x, 50.0, 0.05, xnp)
    yt = torch.tensor(y, requires_grad=True)
    xt_ = torch.tensor(x)
    cos = (yt * xt_).sum((1, 2, 3)) / (yt.flatten(1).norm(dim=1) * xt_.flatten(1).norm(dim=1))
    (-cos.sum()).backward()
    np.testing.assert_allclose(bh.cosine_gradient(y, x, xnp), yt.grad.numpy(), atol=1e-12)
    # edge term: autograd through a zero-padded Sobel correlation
    yt.grad = None
    ku = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=torch.float64)
    su = torch.nn.functional.conv2d(yt, ku.view(1, 1, 3, 3), padding=1)
    sv = torch.nn.functional.conv2d(yt, ku.T.reshape(1, 1, 3, 3), padding=1)
    mu, mv = (torch.tensor(m) for m in masks)
    (su[mu].abs().sum() + sv[mv].abs().sum()).backward()
    assert mu.any() and mv.any()
    np.testing.assert_allclose(bh.edge_gradient(y, masks, xnp), yt.grad.numpy(), atol=1e-12)


def test_loop_on_a_linear_flow_uses_only_f_and_f_inverse():
    rng = np.random.default_rng(1)
    x = rng.random((3, 1, 6, 6))
    y0 = rng.random((3, 1, 6, 6))
    encode, decode, A, b, calls = _linear_flow(36)
    masks = bh.edge_masks(x, 30.0, 0.05, xnp)
    kw = dict(alpha=0.1, beta_fidelity=2.0, beta_edge=0.01, n_iter=4, masks=masks, xp=xnp)
    out, rejected = bh.harmonize(x, y0, encode, decode, **kw)
    assert calls == {"encode": 4, "decode": 4} and rejected == 0
    # the same iteration written out: analytic gradient step, then z <- (1 - alpha) z in closed form
    y = y0.copy()
    for _ in range(4):
        y = y - 2.0 * bh.cosine_gradient(y, x, xnp) - 0.01 * bh.edge_gradient(y, masks, xnp)
        z = y.reshape(3, -1) @ A.T + b
        y = (np.linalg.solve(A, (0.9 * z - b).T).T).reshape(3, 1, 6, 6)
    np.testing.assert_allclose(out, y, atol=1e-12)


def test_transform_never_differentiates_through_the_flow(phantoms, fitted, monkeypatch):
    seen = []
    original = type(fitted.flow_).forward

    def spy(self, v):
        seen.append((torch.is_grad_enabled(), v.requires_grad))
        return original(self, v)

    monkeypatch.setattr(type(fitted.flow_), "forward", spy)
    fitted.transform(phantoms[20:22])
    assert len(seen) == fitted.n_iter and not any(g or r for g, r in seen)
    assert not any(p.requires_grad for p in fitted.flow_.parameters())
    seen.clear()
    fitted.set_params(alpha=0.0).transform(phantoms[20:22])  # no shrink: the flow is not evaluated
    fitted.set_params(alpha=TINY["alpha"])
    assert seen == []


def test_standardize_then_identity_loop_is_template_standardize(phantoms, fitted):
    """With alpha = beta_edge = 0 and init = source the loop leaves the standardised source
    as it is (the cosine's gradient vanishes at y = x), so transform is template_standardize."""
    from subspacelab.harmonization import template_standardize

    src = make_spin_echo_phantoms(24, 16, scanner="B", random_state=0)[20:]
    out = fitted.set_params(alpha=0.0, beta_edge=0.0, init="source").transform(src)
    fitted.set_params(alpha=TINY["alpha"], beta_edge=TINY["beta_edge"], init="source")
    np.testing.assert_allclose(out, template_standardize(src, phantoms[:20], n_neighbors=fitted.n_neighbors,
                                                         field_degree=fitted.field_degree), atol=1e-12)
    # standardize=False: the loop starts from the min-max normalised source itself
    raw = fitted.set_params(standardize=False, alpha=0.0, beta_edge=0.0, init="source").transform(src)
    fitted.set_params(standardize=True, alpha=TINY["alpha"], beta_edge=TINY["beta_edge"], init="source")
    np.testing.assert_allclose(raw, src, atol=1e-12)


def test_spec_invariants_cosine_ascent_and_exact_shrink():
    rng = np.random.default_rng(2)
    x = rng.random((2, 1, 6, 6))
    y = rng.random((2, 1, 6, 6))
    identity = (lambda v: v.reshape(v.shape[0], -1), lambda z: z.reshape(-1, 1, 6, 6))
    masks = bh.edge_masks(x, 30.0, 0.05, xnp)

    def cos(a):
        return np.sum(a * x, axis=(1, 2, 3)) / (np.linalg.norm(a.reshape(2, -1), axis=1) * np.linalg.norm(x.reshape(2, -1), axis=1))

    prev = start = cos(y)
    for _ in range(5):  # alpha = 0, beta_edge = 0: cos(y, x) only increases
        y, _ = bh.harmonize(x, y, *identity, alpha=0.0, beta_fidelity=0.5, beta_edge=0.0, n_iter=1, masks=masks,
                            xp=xnp)
        now = cos(y)
        assert np.all(now >= prev - 1e-12)
        prev = now
    assert np.all(prev > start + 0.05)
    # betas = 0: every iteration multiplies ||z|| by (1 - alpha) exactly
    encode, decode, _, b, _ = _linear_flow(36, 3)
    lin = (lambda v: encode(v) - b, lambda z: decode(z + b))
    y0 = rng.random((2, 1, 6, 6))
    out, _ = bh.harmonize(x, y0, *lin, alpha=0.2, beta_fidelity=0.0, beta_edge=0.0, n_iter=3, masks=masks, xp=xnp)
    np.testing.assert_allclose(np.linalg.norm(lin[0](out), axis=1), 0.8**3 * np.linalg.norm(lin[0](y0), axis=1),
                               rtol=1e-12)


def test_safeguard_keeps_pre_shrink_image():
    x = np.random.default_rng(0).random((2, 1, 6, 6))
    y0 = x.copy()

    def decode(z):
        out = z.reshape(-1, 1, 6, 6).copy()
        out[0] = np.nan  # the first slice's shrink fails
        return out

    out, rejected = bh.harmonize(x, y0, lambda v: v.reshape(2, -1), decode, alpha=0.5, beta_fidelity=0.0,
                                 beta_edge=0.0, n_iter=2, masks=bh.edge_masks(x, 30.0, 0.05, xnp), xp=xnp)
    assert rejected == 2
    np.testing.assert_array_equal(out[0], x[0])
    np.testing.assert_allclose(out[1], 0.25 * x[1])


def test_contrast_inversion_is_not_silently_inverted(phantoms, fitted):
    src = DomainShift("inversion", random_state=0)(phantoms[20:])
    for init in ("nearest_target", "target_mean", "source"):
        out = fitted.set_params(init=init).transform(src)
        for o, s in zip(out, src):
            assert np.corrcoef(o.ravel(), s.ravel())[0, 1] > 0
    fitted.set_params(init="source")


def test_target_image_from_itself_stays_close(phantoms, fitted):
    """Spec 18: a target-domain source with init = source loses little PSNR."""
    held = phantoms[20:]
    out = fitted.set_params(init="source").transform(held)
    fitted.set_params(init="source")
    assert np.all(psnr(held, out, data_range=1.0) > 25.0)


def test_quantize_mode_outputs_bins(phantoms, fitted):
    out = fitted.set_params(quantize=True).transform(phantoms[20:22])
    fitted.set_params(quantize=False)
    np.testing.assert_allclose(out * 256, np.round(out * 256), atol=1e-6)


# ----------------------------------------------------------------------------- bad input

def test_bad_input(phantoms, fitted):
    with pytest.raises(ValueError, match="shape"):
        fitted.transform(make_spin_echo_phantoms(2, 32, random_state=0))
    with pytest.raises(ValueError, match="constant"):
        fitted.transform(np.ones((2, 16, 16)))
    with pytest.raises(ValueError, match="NaN"):
        bad = phantoms[:2].copy()
        bad[0, 3, 3] = np.nan
        fitted.transform(bad)
    with pytest.raises(ValueError, match="constant"):
        BlindHarmonizer(max_steps=1, **TINY).fit(np.zeros((4, 16, 16)))
    with pytest.raises(ValueError, match="divisible"):
        BlindHarmonizer(max_steps=1, **TINY).fit(phantoms[:4, :10, :10])
    with pytest.raises(ValueError, match="alpha"):
        BlindHarmonizer(max_steps=1, **{**TINY, "alpha": 1.0}).fit(phantoms[:4])
    with pytest.raises(ValueError, match="coupling"):
        BlindHarmonizer(coupling="additive", max_steps=1, **TINY).fit(phantoms[:4])
    with pytest.raises(ValueError, match="init"):
        fitted.set_params(init="zeros").transform(phantoms[:2])
    fitted.set_params(init="source")
    with pytest.raises(ValueError, match="n_neighbors"):
        BlindHarmonizer(n_neighbors=5, max_steps=1, **TINY).fit(phantoms[:4])
    with pytest.raises(ValueError, match="field_degree"):
        fitted.set_params(field_degree=-1).transform(phantoms[:2])
    fitted.set_params(field_degree=3)
    with pytest.raises(ValueError, match="4-D|2-D"):
        fitted.transform(phantoms[:2, None])
    with pytest.raises(ValueError, match="1 feature"):
        BlindHarmonizer(max_steps=1, **{**TINY, "levels": 0}).fit(np.random.default_rng(0).random((5, 1)))


def test_spline_coupling_trains(phantoms):
    est = BlindHarmonizer(max_steps=20, coupling="rational_quadratic_spline", **TINY).fit(phantoms[:16])
    assert np.mean(est.loss_curve_[-5:]) < np.mean(est.loss_curve_[:5])
    out = est.transform(DomainShift("gamma", random_state=0)(phantoms[16:18]))
    assert out.shape == (2, 16, 16) and np.isfinite(out).all()


def test_verbose_prints_progress(phantoms, capsys):
    BlindHarmonizer(max_steps=3, verbose=1, **TINY).fit(phantoms[:8])
    out = capsys.readouterr().out
    assert "step 1/3" in out and "bits/dim" in out


# ------------------------------------------------------------- distributed training (torch DDP)

DDP = dict(levels=2, steps_per_level=1, hidden_channels=4, batch_size=7, learning_rate=3e-3, n_threads=1,
           random_state=0)


def _flat_weights(state):
    return np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in state.values()])


def _state(flow):
    return {k: v.detach().cpu().numpy() for k, v in flow.state_dict().items()}


def _assert_follows(state, curve, one):
    """Same parameter names and shapes as the single-process fit ``one``, the same loss per step
    to float32 rounding, and weights close: Adam's first step divides each gradient by its own
    magnitude, which turns rounding in the near-zero gradients of the freshly initialised
    ActNorm biases into differences of up to lr / 3 (a second torch thread in one process does
    the same); a fit that weighted the shares wrongly is off by 4e-4 in the loss and 3e-3 in the
    weights, one that initialised ActNorm on a share by 8e-3 and 2e-2."""
    ref = _state(one.flow_)
    assert list(state) == list(ref)
    assert all(state[k].shape == ref[k].shape for k in ref)
    assert all(bool(state[k]) for k in ref if k.endswith("initialized"))
    np.testing.assert_allclose(curve, one.loss_curve_, rtol=0, atol=5e-5)
    a, b = _flat_weights(state), _flat_weights(ref)
    assert np.linalg.norm(a - b) < 1e-3 * np.linalg.norm(b)


@pytest.mark.parametrize("value", [0, -2, True, 1.5, "gloo", [2]])
def test_bad_distributed_settings_are_named(phantoms, value):
    with pytest.raises(ValueError, match="distributed must be None, an int >= 1 or 'process_group'"):
        BlindHarmonizer(max_steps=1, distributed=value, **DDP).fit(phantoms[:8])


def test_process_group_mode_needs_an_initialised_group(phantoms):
    with pytest.raises(ValueError, match="needs an initialised torch.distributed process group"):
        BlindHarmonizer(max_steps=1, distributed="process_group", **DDP).fit(phantoms[:8])


@pytest.mark.slow
def test_two_processes_train_the_single_process_flow(phantoms):
    """distributed=2: two gloo processes split each batch of 7 into 3 + 4 images; the fitted
    estimator is the single-process one (flow, loss curve, transform, scores, samples)."""
    one = BlindHarmonizer(max_steps=4, **DDP).fit(phantoms[:12])
    two = BlindHarmonizer(max_steps=4, distributed=2, **DDP).fit(phantoms[:12])
    _assert_follows(_state(two.flow_), two.loss_curve_, one)
    assert len(two.loss_curve_) == 4 and not two.flow_.training
    held = phantoms[12:16]
    np.testing.assert_allclose(two.transform(held), one.transform(held), atol=1e-4)
    np.testing.assert_allclose(two.score_samples(held), one.score_samples(held), rtol=5e-5)
    s = two.sample(2, random_state=0)
    assert s.shape == (2, 16, 16) and np.isfinite(s).all()
    # the array-API export is taken from the weights that came back from rank 0
    torch_out = two.transform(held)
    np.testing.assert_allclose(two.set_params(inference="array_api").transform(held), torch_out, atol=1e-4)


@pytest.mark.slow
def test_divergence_on_two_processes_raises_in_the_caller(phantoms):
    """Every rank sees the global batch's loss, so all stop at the same step; the rank's
    FloatingPointError reaches the caller."""
    with pytest.raises(FloatingPointError, match="diverged at step 2"):
        BlindHarmonizer(max_steps=6, **{**DDP, "learning_rate": 1e4}, distributed=2).fit(phantoms[:12])


def _fit_in_process_group(rank, world, X):
    """Run by every rank, as under torchrun: fits in the caller's process group."""
    import torch.distributed as dist

    with pytest.raises(FloatingPointError, match="diverged at step 2"):  # every rank stops, none hangs
        BlindHarmonizer(max_steps=6, **{**DDP, "learning_rate": 1e4}, distributed="process_group").fit(X)
    est = BlindHarmonizer(max_steps=4, distributed="process_group", **DDP).fit(X)
    flat = torch.cat([v.flatten().double() for v in est.flow_.state_dict().values()])
    ref = flat.clone()
    dist.broadcast(ref, src=0)
    deviation = (flat - ref).abs().max().reshape(1)
    dist.all_reduce(deviation, op=dist.ReduceOp.MAX)
    return {"state": _state(est.flow_), "curve": est.loss_curve_, "rank_deviation": float(deviation[0])}


@pytest.mark.slow
def test_process_group_mode_trains_the_single_process_flow(phantoms):
    from subspacelab.nn import _ddp

    out = _ddp.spawn(_fit_in_process_group, 2, (phantoms[:12],))
    assert out["rank_deviation"] == 0.0
    _assert_follows(out["state"], out["curve"], BlindHarmonizer(max_steps=4, **DDP).fit(phantoms[:12]))
