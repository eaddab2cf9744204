r"""Cartesian multi-coil MRI: centred orthonormal FFT, coil sensitivities, sampling masks.

Spec: specs/diffusion_flow.md sections 2.6 and 3.1 (DDS's ``MulticoilMRI``, Chung, Lee & Ye,
ICLR 2024). Forward model, for coil maps :math:`S_c` and a binary mask :math:`P`:

.. math::

    (A x)_c = P \odot F(S_c \odot x), \qquad
    A^H y = \sum_c \overline{S_c} \odot F^H(P \odot y_c), \qquad
    F = \mathrm{fftshift} \circ \mathrm{fft}_{\text{ortho}} \circ \mathrm{ifftshift}.

:math:`F^H = \mathrm{fftshift} \circ \mathrm{ifft}_{\text{ortho}} \circ \mathrm{ifftshift}`
(the transpose of a permutation is its inverse), which is exact for odd sizes too.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .._backend import check_random_state, get_namespace
from .._validation import check_param
from ._base import LinearOperator

__all__ = ["MultiCoilMRI", "SamplingMask", "birdcage_maps", "fft2c", "ifft2c", "sampling_mask"]

_AXES = (-2, -1)


def _complex(x, xp):
    if xp.isdtype(x.dtype, "complex floating"):
        return x
    return xp.astype(x, xp.complex64 if x.dtype == xp.float32 else xp.complex128)


def _real_dtype(dtype, xp):
    return xp.float32 if dtype in (xp.complex64, xp.float32) else xp.float64


def fft2c(x):
    """Centred orthonormal 2-D FFT over the last two axes (any array-API namespace).

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.operators import fft2c, ifft2c
    >>> x = np.random.default_rng(0).normal(size=(5, 7))
    >>> bool(np.allclose(ifft2c(fft2c(x)), x))
    True
    """
    xp, _ = get_namespace(x, names=["x"])
    x = _complex(x, xp)
    return xp.fft.fftshift(xp.fft.fftn(xp.fft.ifftshift(x, axes=_AXES), axes=_AXES, norm="ortho"), axes=_AXES)


def ifft2c(y):
    """Inverse (and adjoint) of :func:`fft2c`.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.operators import fft2c, ifft2c
    >>> x = np.random.default_rng(0).normal(size=(8, 8))
    >>> bool(np.allclose(ifft2c(fft2c(x)), x))
    True
    """
    xp, _ = get_namespace(y, names=["y"])
    y = _complex(y, xp)
    return xp.fft.fftshift(xp.fft.ifftn(xp.fft.ifftshift(y, axes=_AXES), axes=_AXES, norm="ortho"), axes=_AXES)


class MultiCoilMRI(LinearOperator):
    r"""Cartesian multi-coil MRI operator :math:`(Ax)_c = P \odot F(S_c \odot x)`.

    Parameters
    ----------
    mask : array of shape (H, W)
        Sampling mask (values 0 or 1) in k-space, centred (DC at ``(H // 2, W // 2)``).
    coil_maps : array of shape (C, H, W), optional
        Complex coil sensitivities, same namespace and device as ``mask``. Default: one coil
        of sensitivity 1 (single-coil MRI).

    Notes
    -----
    Images are complex of shape ``(*batch, H, W)``; real images are promoted to complex.
    k-space has shape ``(*batch, C, H, W)``. With root-sum-of-squares normalised maps
    (:func:`birdcage_maps`) and a full mask, :math:`A^H A = I`.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.operators import MultiCoilMRI, birdcage_maps, sampling_mask
    >>> maps = birdcage_maps((32, 32), n_coils=4)
    >>> m = sampling_mask((32, 32), "equispaced", acceleration=4, center_fraction=0.08)
    >>> A = MultiCoilMRI(m.mask, maps)
    >>> x = np.random.default_rng(0).normal(size=(32, 32))
    >>> A.forward(x).shape
    (4, 32, 32)
    >>> bool(np.allclose(MultiCoilMRI(np.ones((32, 32)), maps).normal(x), x))
    True
    """

    def __init__(self, mask, coil_maps=None):
        xp, dev = get_namespace(mask, coil_maps, names=["mask", "coil_maps"])
        if mask.ndim != 2:
            raise ValueError(f"mask must be 2-dimensional (H, W), got shape {tuple(mask.shape)}")
        if xp.isdtype(mask.dtype, "bool"):
            mask = xp.astype(mask, xp.float64)
        if not bool(xp.all((mask == 0) | (mask == 1))):
            raise ValueError("mask must contain only 0 and 1")
        H, W = mask.shape
        if coil_maps is None:
            coil_maps = xp.ones((1, H, W), dtype=xp.complex128, device=dev)
        if coil_maps.ndim != 3 or tuple(coil_maps.shape[1:]) != (H, W):
            raise ValueError(
                f"coil_maps must have shape (n_coils, {H}, {W}) to match the mask, got {tuple(coil_maps.shape)}"
            )
        if not bool(xp.all(xp.isfinite(coil_maps))):
            raise ValueError("coil_maps must be finite")
        self.xp, self.device = xp, dev
        self.coil_maps = _complex(coil_maps, xp)
        self.mask = xp.astype(mask, _real_dtype(self.coil_maps.dtype, xp))
        self.in_shape = (H, W)
        self.out_shape = (coil_maps.shape[0], H, W)
        self.acceleration = H * W / max(float(xp.sum(self.mask)), 1.0)

    def _maps(self, x):
        return self.coil_maps if x.dtype == self.coil_maps.dtype else self.xp.astype(self.coil_maps, x.dtype)

    def _forward(self, x):
        xp = self.xp
        x = _complex(x, xp)
        S = self._maps(x)
        return xp.astype(self.mask, _real_dtype(x.dtype, xp)) * fft2c(S * x[..., None, :, :])

    def _adjoint(self, y):
        xp = self.xp
        y = _complex(y, xp)
        S = self._maps(y)
        return xp.sum(xp.conj(S) * ifft2c(xp.astype(self.mask, _real_dtype(y.dtype, xp)) * y), axis=-3)

    def _normal(self, x):
        xp = self.xp
        x = _complex(x, xp)
        S = self._maps(x)
        k = xp.astype(self.mask, _real_dtype(x.dtype, xp)) * fft2c(S * x[..., None, :, :])
        return xp.sum(xp.conj(S) * ifft2c(k), axis=-3)


def birdcage_maps(shape, n_coils=8, radius=1.5, *, xp=None, device=None, dtype=None):
    r"""Analytic birdcage coil sensitivities, root-sum-of-squares normalised.

    Coil :math:`c` sits at angle :math:`\phi_c = 2\pi c / C` on a circle of radius ``radius``
    (image coordinates scaled to [-1, 1]); its sensitivity at pixel :math:`p` is
    :math:`e^{i(\angle(p - p_c) - \phi_c)} / \|p - p_c\|`, and the maps are divided by
    :math:`\sqrt{\sum_c |S_c|^2}` so that :math:`\sum_c |S_c|^2 = 1` at every pixel (the same
    idea as ``sigpy.mri.birdcage_maps``).

    Parameters
    ----------
    shape : (int, int)
        Image shape (H, W).
    n_coils : int
    radius : float
        Coil circle radius, > 1 so that coils lie outside the field of view.
    xp, device, dtype : optional
        Namespace, device and complex dtype of the result (default NumPy, complex128).

    Returns
    -------
    array of shape (n_coils, H, W), complex

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.operators import birdcage_maps
    >>> S = birdcage_maps((16, 16), n_coils=4)
    >>> S.shape, bool(np.allclose(np.sum(np.abs(S) ** 2, axis=0), 1.0))
    ((4, 16, 16), True)
    """
    check_param("n_coils", n_coils, "int", low=1)
    check_param("radius", radius, "real", low=1.0, closed="neither")
    H, W = (int(s) for s in shape)
    yy, xx = np.meshgrid(np.linspace(-1, 1, H), np.linspace(-1, 1, W), indexing="ij")
    phi = 2 * np.pi * np.arange(n_coils) / n_coils
    cx, cy = radius * np.cos(phi), radius * np.sin(phi)
    dx = xx[None] - cx[:, None, None]
    dy = yy[None] - cy[:, None, None]
    maps = np.exp(1j * (np.arctan2(dy, dx) - phi[:, None, None])) / np.hypot(dx, dy)
    maps /= np.sqrt(np.sum(np.abs(maps) ** 2, axis=0, keepdims=True))
    if xp is None:
        return maps if dtype is None else maps.astype(dtype)
    from .._backend import move_to

    out = move_to(maps, xp, device)
    return out if dtype is None else xp.astype(out, dtype)


class SamplingMask(NamedTuple):
    """A k-space sampling mask and its realised acceleration ``H * W / n_sampled``.

    Examples
    --------
    >>> from subspacelab.operators import SamplingMask, sampling_mask
    >>> m = sampling_mask((32, 32), "equispaced", acceleration=4, center_fraction=0.08, random_state=0)
    >>> isinstance(m, SamplingMask), m.mask.shape, bool(m.acceleration > 1)
    (True, (32, 32), True)
    """

    mask: np.ndarray
    acceleration: float


_KINDS = ("equispaced", "uniform1d", "gaussian1d", "uniform2d", "gaussian2d", "variable_density2d")


def sampling_mask(shape, kind="equispaced", acceleration=4, center_fraction=0.08, *, replace=True, random_state=None):
    """Cartesian k-space sampling masks as used by fastMRI and DDS, with the realised acceleration.

    1-D masks select phase-encoding columns (the last axis) and repeat them over rows.

    * ``"equispaced"``: fastMRI's equispaced mask; a centred block of
      ``round(W * center_fraction)`` columns plus columns at a regular spacing (random
      offset) chosen so that about ``W / acceleration`` columns are sampled in total
      (fastMRI's x4 with 8 % and x8 with 4 % centre).
    * ``"uniform1d"`` (DDS ``uniform1d``): ``W // acceleration`` columns nominally: the ACS
      block of ``int(W * center_fraction)`` columns starting at ``W // 2 - n_acs // 2`` plus
      the remaining count drawn uniformly, **with replacement** as in DDS (so fewer distinct
      columns; ``replace=False`` draws distinct new columns).
    * ``"gaussian1d"`` (DDS): ``int(1.2 * W // acceleration)`` draws from
      ``N(W / 2, (15 W / 128)^2)``, clipped to the grid, plus the ACS block.
    * ``"uniform2d"``: ``H * W // acceleration`` uniformly random points (with replacement as
      in DDS unless ``replace=False``).
    * ``"gaussian2d"`` (DDS): ``H * W // acceleration`` points from an isotropic normal of
      variance ``W * 1.5 W / 128`` about the centre, clipped; plus the central ACS square.
    * ``"variable_density2d"``: each point sampled independently with probability
      proportional to ``(1 + (r / r0)^2)^(-1)`` (``r`` the distance to the centre), ``r0``
      set so that the expected count is ``H * W / acceleration``; the ACS square is always
      sampled.

    Parameters
    ----------
    shape : (int, int)
    kind : str
    acceleration : float
        Nominal acceleration factor, >= 1.
    center_fraction : float
        Fraction of fully sampled central columns (ACS), in [0, 1].
    replace : bool
        Whether random draws of ``"uniform1d"``, ``"gaussian1d"`` and ``"uniform2d"`` are with
        replacement (DDS behaviour, the default); the other kinds have no random repeats.
    random_state : int, Generator or None

    Returns
    -------
    SamplingMask
        ``mask`` (float64 NumPy array of 0/1, shape ``shape``) and ``acceleration`` (the
        realised ``H * W / mask.sum()``).

    Examples
    --------
    >>> from subspacelab.operators import sampling_mask
    >>> m = sampling_mask((320, 320), "equispaced", acceleration=4, center_fraction=0.08, random_state=0)
    >>> float(m.acceleration)
    4.0
    """
    check_param("kind", kind, "option", options=_KINDS)
    check_param("acceleration", acceleration, "real", low=1.0)
    check_param("center_fraction", center_fraction, "real", low=0.0, high=1.0)
    check_param("replace", replace, "bool")
    H, W = (int(s) for s in shape)
    if H < 1 or W < 1:
        raise ValueError(f"shape must be positive, got {shape}")
    rng = check_random_state(random_state)
    R = float(acceleration)
    cols = np.zeros(W, dtype=bool)
    if kind == "equispaced":
        n_low = int(round(W * center_fraction))
        start = (W - n_low + 1) // 2
        cols[start : start + n_low] = True
        n_target = W / R
        if n_target > n_low:
            spacing = (W - n_low) / (n_target - n_low)
            offset = rng.integers(0, max(int(round(spacing)), 1))
            idx = np.round(np.arange(offset, W - 1e-9, spacing)).astype(int)
            cols[idx[idx < W]] = True
        mask = np.broadcast_to(cols, (H, W))
    elif kind in ("uniform1d", "gaussian1d"):
        n_samp = int(W // R)
        n_acs = int(W * center_fraction)
        c_from = W // 2 - n_acs // 2
        cols[c_from : c_from + n_acs] = True
        if kind == "uniform1d":
            n_more = max(n_samp - n_acs, 0)
            if replace:
                cols[rng.integers(0, W, size=n_more)] = True
            else:
                free = np.flatnonzero(~cols)
                cols[rng.choice(free, size=min(n_more, free.size), replace=False)] = True
        else:
            n_draw = int(1.2 * n_samp)
            if replace:
                idx = rng.normal(W / 2, 15.0 / 128 * W, size=n_draw)
                cols[np.clip(np.round(idx).astype(int), 0, W - 1)] = True
            else:
                p = np.exp(-0.5 * ((np.arange(W) - W / 2) / (15.0 / 128 * W)) ** 2)
                free = np.flatnonzero(~cols)
                n_more = min(max(n_samp - n_acs, 0), free.size)
                p = p[free] / p[free].sum()
                cols[rng.choice(free, size=n_more, replace=False, p=p)] = True
        mask = np.broadcast_to(cols, (H, W))
    else:
        mask = np.zeros((H, W), dtype=bool)
        n_acs_r, n_acs_c = int(H * center_fraction), int(W * center_fraction)
        r0, c0 = H // 2 - n_acs_r // 2, W // 2 - n_acs_c // 2
        mask[r0 : r0 + n_acs_r, c0 : c0 + n_acs_c] = True
        n_samp = int(H * W // R)
        if kind == "variable_density2d":
            yy, xx = np.meshgrid(np.arange(H) - H / 2, np.arange(W) - W / 2, indexing="ij")
            r2 = (yy / H) ** 2 + (xx / W) ** 2
            lo, hi = 1e-8, 1e2
            for _ in range(100):  # bisection on r0^2 for the expected count
                mid = math.sqrt(lo * hi)
                if np.minimum(1.0, 1.0 / (1.0 + r2 / mid)).sum() < n_samp:
                    lo = mid
                else:
                    hi = mid
            prob = np.minimum(1.0, 1.0 / (1.0 + r2 / hi))
            mask |= rng.random((H, W)) < prob
        elif replace or kind == "gaussian2d":
            if kind == "uniform2d":
                rr, cc = rng.integers(0, H, size=n_samp), rng.integers(0, W, size=n_samp)
            else:
                std = math.sqrt(W * 1.5 * W / 128)
                rr = np.clip(np.round(rng.normal(H / 2, std, size=n_samp)).astype(int), 0, H - 1)
                cc = np.clip(np.round(rng.normal(W / 2, std, size=n_samp)).astype(int), 0, W - 1)
            mask[rr, cc] = True
        else:
            free = np.flatnonzero(~mask.ravel())
            pick = rng.choice(free, size=min(max(n_samp - int(mask.sum()), 0), free.size), replace=False)
            mask.ravel()[pick] = True
    mask = np.ascontiguousarray(mask, dtype=np.float64)
    return SamplingMask(mask, H * W / max(mask.sum(), 1.0))
