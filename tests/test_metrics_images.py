"""PSNR and SSIM on every backend; equal to scikit-image's on real images (spec 8.19)."""

import numpy as np
import pytest

from subspacelab.metrics import psnr, ssim


def _images(rng):
    try:
        from subspacelab.datasets import load_skimage_image

        x = load_skimage_image("camera")[::4, ::4]
    except ImportError:
        x = rng.random((64, 64))
    y = np.clip(x + 0.1 * rng.normal(size=x.shape), 0, 1)
    return x, y


def test_match_skimage(rng):
    metrics = pytest.importorskip("skimage.metrics")
    x, y = _images(rng)
    assert abs(float(psnr(x, y, data_range=1.0)) - metrics.peak_signal_noise_ratio(x, y, data_range=1.0)) < 1e-10
    for win in (3, 7, 11):
        ref = metrics.structural_similarity(x, y, data_range=1.0, win_size=win)
        assert abs(float(ssim(x, y, data_range=1.0, win_size=win)) - ref) < 1e-6


def test_every_backend_and_batches(backend, rng):
    x, y = _images(rng)
    X = backend.asarray(np.stack([x, y, x]))
    Y = backend.asarray(np.stack([y, y, 0.5 * x]))
    p, s = psnr(X, Y, data_range=1.0), ssim(X, Y, data_range=1.0)
    assert tuple(p.shape) == (3,) and tuple(s.shape) == (3,)
    p, s = backend.to_numpy(p), backend.to_numpy(s)
    assert np.isinf(p[1]) and p[1] > 0 and abs(s[1] - 1) < 1e-12
    np.testing.assert_allclose(p[0], float(psnr(x, y, data_range=1.0)), rtol=1e-12)
    np.testing.assert_allclose(s[0], float(ssim(x, y, data_range=1.0)), rtol=1e-9)
    assert s[2] < 1


def test_psnr_value():
    assert float(psnr(np.zeros((3, 3)), np.full((3, 3), 2.0), data_range=4.0)) == pytest.approx(10 * np.log10(4.0))


def test_bad_input(rng):
    x = rng.random((8, 8))
    with pytest.raises(ValueError, match="one shape"):
        psnr(x, x[:7], data_range=1.0)
    with pytest.raises(TypeError, match="magnitude"):
        ssim(x.astype(complex), x.astype(complex), data_range=1.0)
    with pytest.raises(ValueError, match="data_range"):
        psnr(x, x, data_range=0.0)
    with pytest.raises(ValueError, match="odd"):
        ssim(x, x, data_range=1.0, win_size=4)
    with pytest.raises(ValueError, match="win_size"):
        ssim(x[:5, :5], x[:5, :5], data_range=1.0)
    with pytest.raises(ValueError, match="NaN"):
        psnr(np.full((3, 3), np.nan), x[:3, :3], data_range=1.0)
    with pytest.raises(ValueError, match="2 dimensions"):
        psnr(np.ones(3), np.ones(3), data_range=1.0)
