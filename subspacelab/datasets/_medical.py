"""Medical and test images read from installed wheels, and the mixture-of-low-rank-Gaussians
generator.

Files are read directly (a small PNG decoder, a NIfTI-1 reader, ``np.load``); nilearn, dipy,
matplotlib and scikit-image are never imported, so they can be installed with ``--no-deps``.
Spec: specs/datasets.md; specs/rate_reduction.md section 4.1 (MoLRG data model).
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib

import numpy as np

from .._backend import check_random_state
from .._validation import check_param
from ._images import package_data_dir

__all__ = [
    "load_mni152_t1",
    "load_mri_slice",
    "load_skimage_image",
    "make_mixture_of_low_rank_gaussians",
    "resize_image",
    "shepp_logan_phantom",
]

MRI_SLICES = ("mni152_axial", "mni152_coronal", "mni152_sagittal", "dipy_t1_coronal", "matplotlib_s1045")
SKIMAGE_IMAGES = ("phantom", "camera", "moon", "coins", "page", "text", "horse", "brick", "grass", "gravel",
                  "cell", "astronaut", "chelsea", "coffee", "logo")


def _read_png(path):
    """Decode a non-interlaced 8/16-bit PNG (gray, RGB, gray+alpha, RGBA, palette) to uint arrays."""
    with open(path, "rb") as fh:
        data = fh.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG file")
    pos, idat, palette = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"PLTE":
            palette = np.frombuffer(body, dtype=np.uint8).reshape(-1, 3)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if interlace or depth not in (8, 16) or ctype not in (0, 2, 3, 4, 6):
        raise ValueError(f"{path}: unsupported PNG layout (depth {depth}, colour type {ctype}, interlace {interlace})")
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[ctype]
    bpp = channels * depth // 8
    stride = width * bpp
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8).reshape(height, stride + 1)
    out = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int64)
    for r in range(height):
        ftype, line = raw[r, 0], raw[r, 1:].astype(np.int64)
        if ftype == 0:
            cur = line
        elif ftype == 2:
            cur = (line + prev) % 256
        elif ftype == 1:  # Sub: a running sum per byte lane
            cur = np.empty(stride, dtype=np.int64)
            for lane in range(bpp):
                cur[lane::bpp] = np.cumsum(line[lane::bpp]) % 256
        else:  # Average (3) and Paeth (4) depend on the reconstructed left byte: sequential
            cur = np.zeros(stride, dtype=np.int64)
            lst, up = line.tolist(), prev.tolist()
            res = [0] * stride
            for i in range(stride):
                left = res[i - bpp] if i >= bpp else 0
                if ftype == 3:
                    res[i] = (lst[i] + (left + up[i]) // 2) % 256
                else:
                    ul = up[i - bpp] if i >= bpp else 0
                    p = left + up[i] - ul
                    pa, pb, pc = abs(p - left), abs(p - up[i]), abs(p - ul)
                    pred = left if (pa <= pb and pa <= pc) else (up[i] if pb <= pc else ul)
                    res[i] = (lst[i] + pred) % 256
            cur = np.asarray(res, dtype=np.int64)
        out[r] = cur
        prev = cur
    if depth == 16:
        img = out.view(">u2").reshape(height, width, channels).astype(np.uint16)
    else:
        img = out.reshape(height, width, channels)
    if ctype == 3:
        img = palette[img[..., 0]]
    return img[..., 0] if img.shape[-1] == 1 else img


def load_skimage_image(name="camera", *, as_gray=True):
    """A test image bundled in the scikit-image wheel, as float64 in [0, 1] (read directly).

    Parameters
    ----------
    name : str
        One of ``phantom, camera, moon, coins, page, text, horse, brick, grass, gravel, cell,
        astronaut, chelsea, coffee, logo``.
    as_gray : bool
        Convert colour images to luminance with scikit-image's ``rgb2gray`` weights
        (0.2125, 0.7154, 0.0721); the alpha channel is dropped.

    Raises
    ------
    DataNotAvailableError
        When scikit-image is not installed (``pip install --no-deps scikit-image``).

    Examples
    --------
    >>> from subspacelab.datasets import load_skimage_image
    >>> load_skimage_image("camera").shape
    (512, 512)
    """
    check_param("name", name, "option", options=SKIMAGE_IMAGES)
    folder = package_data_dir("skimage", "data", install_hint="pip install --no-deps scikit-image")
    img = _read_png(os.path.join(folder, f"{name}.png"))
    scale = 65535.0 if img.dtype == np.uint16 else 255.0
    img = img.astype(np.float64) / scale
    if img.ndim == 3:
        img = img[..., :3]
        if as_gray:
            img = img @ np.array([0.2125, 0.7154, 0.0721])
    return img


def shepp_logan_phantom(size=None):
    """scikit-image's Shepp-Logan phantom (400 x 400, float64 in [0, 1]), optionally resized.

    Parameters
    ----------
    size : int, optional
        Resize to ``size x size`` with :func:`resize_image`.

    Examples
    --------
    >>> from subspacelab.datasets import shepp_logan_phantom
    >>> shepp_logan_phantom().shape, shepp_logan_phantom(64).shape
    ((400, 400), (64, 64))
    """
    img = load_skimage_image("phantom")
    return img if size is None else resize_image(img, (size, size))


def resize_image(img, shape):
    """Resize a 2-D image by linear interpolation after area pre-filtering when shrinking.

    Uses ``scipy.ndimage`` (a Gaussian of width ``(factor - 1) / 2`` against aliasing, then
    ``zoom(order=1)``), like scikit-image's ``resize(anti_aliasing=True)``.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.datasets import resize_image
    >>> small = resize_image(np.ones((64, 64)), (16, 16))
    >>> small.shape, bool(np.allclose(small, 1.0))
    ((16, 16), True)
    """
    from scipy import ndimage

    img = np.asarray(img, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"img must be 2-dimensional, got shape {img.shape}")
    H, W = (int(s) for s in shape)
    if H < 1 or W < 1:
        raise ValueError(f"shape must be positive, got {shape}")
    factors = (img.shape[0] / H, img.shape[1] / W)
    sigma = [max(0.0, (f - 1) / 2) for f in factors]
    if any(s > 0 for s in sigma):
        img = ndimage.gaussian_filter(img, sigma, mode="reflect")
    out = ndimage.zoom(img, (H / img.shape[0], W / img.shape[1]), order=1, mode="nearest", grid_mode=True)
    return np.clip(out, img.min(), img.max())


def _read_nifti(path):
    """Read a (gzipped) NIfTI-1 file: returns the scaled data array (x fastest, Fortran order)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as fh:
        data = fh.read()
    endian = "<" if struct.unpack("<i", data[:4])[0] == 348 else ">"
    if struct.unpack(endian + "i", data[:4])[0] != 348:
        raise ValueError(f"{path} is not a NIfTI-1 file")
    dims = struct.unpack(endian + "8h", data[40:56])
    dtype_code = struct.unpack(endian + "h", data[70:72])[0]
    vox_offset = int(struct.unpack(endian + "f", data[108:112])[0])
    slope, inter = struct.unpack(endian + "2f", data[112:120])
    codes = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4"}
    if dtype_code not in codes:
        raise ValueError(f"{path}: unsupported NIfTI datatype {dtype_code}")
    shape = dims[1 : 1 + dims[0]]
    arr = np.frombuffer(data, dtype=endian + codes[dtype_code], count=int(np.prod(shape)), offset=vox_offset)
    arr = arr.reshape(shape, order="F").astype(np.float64)
    if slope not in (0.0, 1.0) or inter != 0.0:
        arr = arr * (slope if slope != 0.0 else 1.0) + inter
    return arr


def load_mni152_t1():
    """The MNI ICBM152 2009a symmetric T1 template (1 mm) shipped in the nilearn wheel.

    Returns
    -------
    ndarray of shape (197, 233, 189)
        Voxel intensities scaled to [0, 1], axes (x: left-right, y: posterior-anterior,
        z: inferior-superior) as stored.

    Raises
    ------
    DataNotAvailableError
        When nilearn is not installed (``pip install --no-deps nilearn``).

    Examples
    --------
    >>> from subspacelab.datasets import load_mni152_t1
    >>> vol = load_mni152_t1()
    >>> vol.shape, float(vol.min()), float(vol.max())
    ((197, 233, 189), 0.0, 1.0)
    """
    folder = package_data_dir("nilearn", "datasets", "data", install_hint="pip install --no-deps nilearn")
    vol = _read_nifti(os.path.join(folder, "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"))
    return vol / vol.max()


def load_mri_slice(name="dipy_t1_coronal", *, size=None):
    """A real 2-D T1 MRI slice from a packaged template, float64 in [0, 1].

    Parameters
    ----------
    name : str
        * ``"mni152_axial"``, ``"mni152_coronal"``, ``"mni152_sagittal"``: the central slice
          of the MNI152 template (nilearn), oriented for display;
        * ``"dipy_t1_coronal"``: dipy's ``t1_coronal_slice.npy`` (256 x 256);
        * ``"matplotlib_s1045"``: matplotlib's ``s1045.ima.gz`` sagittal head slice (256 x 256).
    size : int, optional
        Resize to ``size x size`` (:func:`resize_image`).

    Raises
    ------
    DataNotAvailableError
        When the package holding the file is not installed.

    Examples
    --------
    >>> from subspacelab.datasets import load_mri_slice
    >>> img = load_mri_slice("dipy_t1_coronal", size=64)
    >>> img.shape, bool(img.min() >= 0.0 and img.max() <= 1.0)
    ((64, 64), True)
    """
    check_param("name", name, "option", options=MRI_SLICES)
    if name.startswith("mni152"):
        vol = load_mni152_t1()
        axis = {"mni152_sagittal": 0, "mni152_coronal": 1, "mni152_axial": 2}[name]
        img = np.rot90(np.take(vol, vol.shape[axis] // 2, axis=axis))
    elif name == "dipy_t1_coronal":
        folder = package_data_dir("dipy", "data", "files", install_hint="pip install --no-deps dipy")
        img = np.load(os.path.join(folder, "t1_coronal_slice.npy"))
    else:
        folder = package_data_dir("matplotlib", "mpl-data", "sample_data", install_hint="pip install --no-deps matplotlib")
        with gzip.open(os.path.join(folder, "s1045.ima.gz"), "rb") as fh:
            img = np.frombuffer(fh.read(), dtype="<u2").reshape(256, 256)
    img = np.ascontiguousarray(img, dtype=np.float64)
    img = (img - img.min()) / max(img.max() - img.min(), 1e-300)
    return img if size is None else resize_image(img, (size, size))


def make_mixture_of_low_rank_gaussians(n_samples=100, n_features=48, n_components=2, subspace_dim=4, *,
                                       orthogonal=True, weights=None, random_state=None):
    r"""Samples of a mixture of low-rank Gaussians (MoLRG), the data model of Wang et al. (2024).

    :math:`x = U_k a` with :math:`a \sim N(0, I_{d_k})` and component :math:`k` drawn with
    probability :math:`\pi_k`; :math:`U_k \in O(D, d_k)` has orthonormal columns.
    With ``orthogonal=True`` (the official generator, Diffusion-Model-Generalizability
    ``edm/training/dataset.py::MoLRG``) one random :math:`D \times D` orthogonal matrix is
    drawn and component ``k`` takes a disjoint block of its columns, so the subspaces are
    mutually orthogonal; otherwise each basis is drawn independently (QR of a Gaussian).

    Parameters
    ----------
    n_samples : int or sequence of int
        Total number of samples (split by ``weights``, equal by default), or one count per
        component.
    n_features : int
        Ambient dimension D.
    n_components : int
        K.
    subspace_dim : int or sequence of int
        :math:`d_k` (one value for all, or one per component).
    orthogonal : bool
    weights : sequence of float, optional
        Mixing proportions :math:`\pi_k` used when ``n_samples`` is an int (counts are
        drawn from a multinomial).
    random_state : int, Generator or None

    Returns
    -------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,)
        Component labels.
    bases : list of ndarray of shape (n_features, d_k)

    Examples
    --------
    >>> from subspacelab.datasets import make_mixture_of_low_rank_gaussians
    >>> X, y, bases = make_mixture_of_low_rank_gaussians(20, 10, 2, 3, random_state=0)
    >>> X.shape, bases[0].shape
    ((20, 10), (10, 3))
    """
    rng = check_random_state(random_state)
    check_param("n_features", n_features, "int", low=1)
    check_param("n_components", n_components, "int", low=1)
    check_param("orthogonal", orthogonal, "bool")
    dims = [subspace_dim] * n_components if np.ndim(subspace_dim) == 0 else list(subspace_dim)
    if len(dims) != n_components:
        raise ValueError(f"subspace_dim must have n_components={n_components} entries, got {len(dims)}")
    for d in dims:
        check_param("subspace_dim", d, "int", low=1, high=n_features)
    if orthogonal and sum(dims) > n_features:
        raise ValueError(f"orthogonal subspaces need sum(subspace_dim)={sum(dims)} <= n_features={n_features}")
    if np.ndim(n_samples) == 0:
        check_param("n_samples", n_samples, "int", low=1)
        if weights is None:
            counts = np.full(n_components, n_samples // n_components)
            counts[: n_samples % n_components] += 1
        else:
            w = np.asarray(weights, dtype=np.float64)
            if w.shape != (n_components,) or np.any(w < 0) or not np.isclose(w.sum(), 1.0):
                raise ValueError("weights must be n_components non-negative numbers summing to 1")
            counts = rng.multinomial(n_samples, w)
    else:
        counts = np.asarray(n_samples)
        if counts.shape != (n_components,) or np.any(counts < 0):
            raise ValueError("n_samples given per component must have n_components non-negative entries")
    if orthogonal:
        Q, _ = np.linalg.qr(rng.standard_normal((n_features, n_features)))
        edges = np.concatenate(([0], np.cumsum(dims)))
        bases = [Q[:, edges[k] : edges[k + 1]] for k in range(n_components)]
    else:
        bases = [np.linalg.qr(rng.standard_normal((n_features, d)))[0] for d in dims]
    X = np.concatenate([rng.standard_normal((int(c), d)) @ U.T for c, d, U in zip(counts, dims, bases)], axis=0)
    y = np.repeat(np.arange(n_components), counts)
    perm = rng.permutation(X.shape[0])
    return X[perm], y[perm], bases

