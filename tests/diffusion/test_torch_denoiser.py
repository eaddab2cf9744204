"""TorchDenoiser: the U-Net trains and lowers the denoising loss on a tiny set; outputs keep
the caller's namespace; state_dict round trip; seeded reproducibility; bad input."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from subspacelab.datasets import load_digits  # noqa: E402
from subspacelab.diffusion import TorchDenoiser  # noqa: E402

SMALL = dict(base_channels=8, channel_mult=(1, 2), batch_size=16, n_threads=1, random_state=0)


@pytest.fixture(scope="module")
def digits():
    X, _ = load_digits(return_images=True)
    return X[:48]


@pytest.fixture(scope="module")
def trained(digits):
    return TorchDenoiser(max_steps=60, ema_decay=0.8, learning_rate=3e-3, **SMALL).fit(digits)


def test_training_lowers_denoising_loss(digits, trained):
    untrained = TorchDenoiser(max_steps=1, **SMALL).fit(digits)
    before, after = untrained.denoising_loss(digits), trained.denoising_loss(digits)
    assert after < 0.8 * before
    h = trained.loss_history_
    assert h.shape == (60,) and h[-15:].mean() < h[:15].mean()
    # the trained denoiser beats doing nothing on held-out noisy digits at a moderate noise level
    X, _ = load_digits(return_images=True)
    test = X[1000:1040]
    rng = np.random.default_rng(0)
    noisy = test + 0.3 * rng.normal(size=test.shape)
    assert np.mean((trained.denoise(noisy, 0.3) - test) ** 2) < np.mean((noisy - test) ** 2)


def test_edm_preconditioning_limits(trained, digits):
    # c_skip -> 1 and c_out -> 0 as sigma -> 0: D(z, sigma) -> z
    z = digits[:4]
    np.testing.assert_allclose(trained.denoise(z, 1e-5), z, atol=1e-3)


def test_namespaces_shapes_and_dtypes(backend, trained, digits):
    z = backend.asarray(digits[:3])
    out = trained.denoise(z, 0.5)
    assert type(out) is type(z) and tuple(out.shape) == (3, 8, 8)
    np.testing.assert_allclose(backend.to_numpy(out), trained.denoise(digits[:3], 0.5), atol=1e-6)
    sig = backend.asarray(np.array([0.1, 0.5, 1.0]))
    np.testing.assert_allclose(backend.to_numpy(trained.denoise(z, sig))[1], trained.denoise(digits[:3], 0.5)[1], atol=1e-6)
    flat = trained.denoise(digits[:3].reshape(3, 64), 0.5)
    assert flat.shape == (3, 64)


def test_state_dict_round_trip(tmp_path, trained, digits):
    path = tmp_path / "d.pt"
    torch.save(trained.state_dict(), path)
    loaded = TorchDenoiser().load_state_dict(torch.load(path))
    np.testing.assert_array_equal(loaded.denoise(digits[:5], 0.7), trained.denoise(digits[:5], 0.7))
    assert loaded.get_params() == trained.get_params()


def test_seeded_training_is_reproducible(digits):
    a = TorchDenoiser(max_steps=3, **SMALL).fit(digits)
    b = TorchDenoiser(max_steps=3, **SMALL).fit(digits)
    np.testing.assert_array_equal(a.loss_history_, b.loss_history_)
    np.testing.assert_array_equal(a.denoise(digits[:2], 0.4), b.denoise(digits[:2], 0.4))


def test_odd_sizes_and_channels(rng):
    X = rng.random((6, 2, 7, 5))
    D = TorchDenoiser(base_channels=4, max_steps=2, batch_size=4, n_threads=1, random_state=0).fit(X)
    assert D.image_shape_ == (2, 7, 5)
    assert D.denoise(X[:2], 1.0).shape == (2, 2, 7, 5)
    D2 = TorchDenoiser(image_shape=(7, 5), base_channels=4, max_steps=2, n_threads=1).fit(rng.random((6, 35)))
    assert D2.denoise(rng.random((2, 35)), 1.0).shape == (2, 35)


def test_bad_input(trained, digits, rng):
    with pytest.raises(ValueError, match="sigma"):
        trained.denoise(digits[:2], 0.0)
    with pytest.raises(ValueError, match="64 values"):
        trained.denoise(rng.random((2, 7, 7)), 1.0)
    with pytest.raises(ValueError, match="NaN"):
        trained.denoise(np.full((1, 8, 8), np.nan), 1.0)
    with pytest.raises(ValueError, match="pixels"):
        TorchDenoiser(image_shape=(3, 3), max_steps=1).fit(rng.random((4, 10)))
    with pytest.raises(ValueError, match="learning_rate"):
        TorchDenoiser(learning_rate=0.0, max_steps=1).fit(digits)
    with pytest.raises(TypeError, match="real"):
        trained.denoise(digits[:2].astype(complex), 1.0)
