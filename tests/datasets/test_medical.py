"""Packaged MRI/CT images read from wheels, the PNG/NIfTI readers, and the MoLRG generator."""

import gzip
import os
import struct
import zlib

import numpy as np
import pytest

from subspacelab.datasets import (
    DataNotAvailableError,
    load_mni152_t1,
    load_mri_slice,
    load_skimage_image,
    make_mixture_of_low_rank_gaussians,
    resize_image,
    shepp_logan_phantom,
)
from subspacelab.datasets._medical import _read_nifti, _read_png


def _data(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except DataNotAvailableError as exc:
        pytest.skip(str(exc))


def _write_png(path, img, filters):
    """Encode uint8 ``img`` (H, W) or (H, W, C) with the given per-row filter types."""
    img = np.asarray(img, dtype=np.uint8)
    H, W = img.shape[:2]
    C = 1 if img.ndim == 2 else img.shape[2]
    rows = img.reshape(H, W * C).astype(np.int64)
    out = bytearray()
    prev = np.zeros(W * C, dtype=np.int64)
    for r in range(H):
        f, line = filters[r % len(filters)], rows[r]
        left = np.concatenate((np.zeros(C, np.int64), line[:-C]))
        ul = np.concatenate((np.zeros(C, np.int64), prev[:-C]))
        if f == 0:
            enc = line
        elif f == 1:
            enc = line - left
        elif f == 2:
            enc = line - prev
        elif f == 3:
            enc = line - (left + prev) // 2
        else:
            p = left + prev - ul
            pa, pb, pc = np.abs(p - left), np.abs(p - prev), np.abs(p - ul)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, ul))
            enc = line - pred
        out += bytes([f]) + bytes((enc % 256).astype(np.uint8))
        prev = line
    ctype = {1: 0, 3: 2, 4: 6}[C]

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, 8, ctype, 0, 0, 0))
    data += chunk(b"IDAT", zlib.compress(bytes(out))) + chunk(b"IEND", b"")
    with open(path, "wb") as fh:
        fh.write(data)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_png_reader_every_filter(tmp_path, rng, channels):
    shape = (7, 5) if channels == 1 else (7, 5, channels)
    img = rng.integers(0, 256, size=shape)
    path = os.path.join(tmp_path, "x.png")
    _write_png(path, img, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(_read_png(path), img)


def test_nifti_reader(tmp_path, rng):
    vol = rng.integers(0, 255, size=(4, 3, 2)).astype(np.uint8)
    hdr = bytearray(352)
    struct.pack_into("<i", hdr, 0, 348)
    struct.pack_into("<8h", hdr, 40, 3, 4, 3, 2, 1, 1, 1, 1)
    struct.pack_into("<hh", hdr, 70, 2, 8)
    struct.pack_into("<fff", hdr, 108, 352.0, 2.0, 1.0)
    path = os.path.join(tmp_path, "v.nii.gz")
    with gzip.open(path, "wb") as fh:
        fh.write(bytes(hdr) + vol.tobytes(order="F"))
    np.testing.assert_allclose(_read_nifti(path), vol * 2.0 + 1.0)


@pytest.mark.data
def test_skimage_images():
    ph = _data(shepp_logan_phantom)
    assert ph.shape == (400, 400) and ph.min() == 0 and ph.max() == 1
    cam = _data(load_skimage_image, "camera")
    assert cam.shape == (512, 512)
    skio = pytest.importorskip("skimage.data")
    try:
        ref = skio.camera()
    except ImportError:  # scikit-image's own reader needs Pillow/imageio
        ref = None
    if ref is not None:
        np.testing.assert_allclose(cam, ref / 255.0)
    assert abs(cam.mean() - 0.5061) < 1e-3  # mean grey level of the cameraman
    assert _data(load_skimage_image, "astronaut", as_gray=False).shape == (512, 512, 3)
    small = _data(shepp_logan_phantom, 64)
    assert small.shape == (64, 64) and 0 <= small.min() and small.max() <= 1


@pytest.mark.data
@pytest.mark.parametrize("name, shape", [("dipy_t1_coronal", (256, 256)), ("matplotlib_s1045", (256, 256)),
                                         ("mni152_axial", (233, 197)), ("mni152_coronal", (189, 197)),
                                         ("mni152_sagittal", (189, 233))])
def test_mri_slices(name, shape):
    img = _data(load_mri_slice, name)
    assert img.shape == shape and img.min() == 0 and img.max() == 1
    assert 0.05 < img.mean() < 0.6  # a head, not an empty or saturated frame
    assert _data(load_mri_slice, name, size=32).shape == (32, 32)


@pytest.mark.data
def test_mni152_volume():
    vol = _data(load_mni152_t1)
    assert vol.shape == (197, 233, 189) and vol.max() == 1.0
    # left-right symmetric template (the 2009a *sym* version)
    assert np.corrcoef(vol.ravel(), vol[::-1].ravel())[0, 1] > 0.95


def test_resize_image():
    img = np.arange(64.0).reshape(8, 8)
    small = resize_image(img, (4, 4))
    assert small.shape == (4, 4)
    assert abs(small.mean() - img.mean()) < 1.0
    with pytest.raises(ValueError, match="2-dimensional"):
        resize_image(np.ones(3), (2, 2))


def test_make_mixture_of_low_rank_gaussians():
    X, y, bases = make_mixture_of_low_rank_gaussians(90, 12, 3, [2, 3, 4], random_state=0)
    assert X.shape == (90, 12) and np.bincount(y).tolist() == [30, 30, 30]
    for k, U in enumerate(bases):
        np.testing.assert_allclose(U.T @ U, np.eye(U.shape[1]), atol=1e-12)
        Xk = X[y == k]
        np.testing.assert_allclose(Xk - Xk @ U @ U.T, 0, atol=1e-12)
        for j, V in enumerate(bases):
            if j != k:
                np.testing.assert_allclose(U.T @ V, 0, atol=1e-12)  # mutually orthogonal
    X2, y2, _ = make_mixture_of_low_rank_gaussians(90, 12, 3, [2, 3, 4], random_state=0)
    np.testing.assert_array_equal(X, X2)
    Xw, yw, _ = make_mixture_of_low_rank_gaussians(1000, 5, 2, 1, weights=[0.2, 0.8], orthogonal=False, random_state=0)
    assert abs(np.mean(yw == 1) - 0.8) < 0.05
    with pytest.raises(ValueError, match="orthogonal"):
        make_mixture_of_low_rank_gaussians(10, 4, 3, 2)
    with pytest.raises(ValueError, match="subspace_dim"):
        make_mixture_of_low_rank_gaussians(10, 4, 2, [1])
    with pytest.raises(ValueError, match="weights"):
        make_mixture_of_low_rank_gaussians(10, 4, 2, 1, weights=[0.5, 0.6])
