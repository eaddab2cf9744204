r"""Parallel-beam CT with a matched forward/adjoint pair (Joseph's method).

Spec: specs/diffusion_flow.md section 3.2. The DDS reference code uses a ``grid_sample``
rotate-and-sum projector whose "adjoint" is an interpolated, rescaled backprojection, not the
transpose (defect 2.7-5). Here the system matrix :math:`A` is built once in NumPy by Joseph's
ray-driven method and stored as two ELL tables with the *same* weights: rows of :math:`A`
(for the forward) and rows of :math:`A^T` (for the adjoint). Both directions are gathers
(:func:`subspacelab.kernels.ell_matvec`: array API, Numba or CUDA), so
:math:`\langle Ax, y\rangle = \langle x, A^T y\rangle` holds to rounding on every backend.

Geometry (as in DDS): ``ceil(hypot(H, W))`` detector bins of unit width, unit pixels, centre
of rotation at the image centre; angle :math:`\theta` integrates along the lines
:math:`x\cos\theta + y\sin\theta = t` (``x`` to the right, ``y`` up).
"""

from __future__ import annotations

import math

import numpy as np

from .._backend import move_to
from .._validation import check_param
from ..kernels import ell_matvec
from ._base import LinearOperator

__all__ = ["ParallelBeamCT", "limited_angle_angles", "sparse_view_angles"]


def sparse_view_angles(n_views):
    """DDS sparse-view geometry: ``k * 180 / n_views`` degrees for ``k < n_views``.

    Examples
    --------
    >>> from subspacelab.operators import sparse_view_angles
    >>> [float(a) for a in sparse_view_angles(4)]
    [0.0, 45.0, 90.0, 135.0]
    """
    check_param("n_views", n_views, "int", low=1)
    return np.arange(n_views) * (180.0 / n_views)


def limited_angle_angles(n_angles=120):
    """DDS limited-angle geometry: ``0, 1, ..., n_angles - 1`` degrees (DDS uses 120).

    Examples
    --------
    >>> from subspacelab.operators import limited_angle_angles
    >>> angles = limited_angle_angles(4)
    >>> [float(a) for a in angles]
    [0.0, 1.0, 2.0, 3.0]
    """
    check_param("n_angles", n_angles, "int", low=1, high=180)
    return np.arange(n_angles, dtype=np.float64)


def _joseph(H, W, theta, n_det):
    """Forward ELL tables of Joseph's projector: ``(n_views * n_det, 2 * max(H, W))`` int32
    pixel indices and float64 weights (padding slots: index 0, weight 0)."""
    t = np.arange(n_det) - (n_det - 1) / 2.0
    xs = np.arange(W) - (W - 1) / 2.0
    ys = (H - 1) / 2.0 - np.arange(H)
    L = max(H, W)
    idx = np.zeros((theta.size, n_det, L, 2), dtype=np.int32)
    wts = np.zeros((theta.size, n_det, L, 2), dtype=np.float64)
    for v, th in enumerate(np.deg2rad(theta)):
        c, s = math.cos(th), math.sin(th)
        if abs(s) >= abs(c):  # step over columns, interpolate between rows
            pos = (H - 1) / 2.0 - (t[:, None] - xs[None, :] * c) / s
            lim, scale, n_step = H, 1.0 / abs(s), W
        else:  # step over rows, interpolate between columns
            pos = (t[:, None] - ys[None, :] * s) / c + (W - 1) / 2.0
            lim, scale, n_step = W, 1.0 / abs(c), H
        step = np.arange(n_step)[None, :]
        p0 = np.floor(pos).astype(np.int64)
        f = pos - p0
        for slot, (q, w) in enumerate(((p0, (1.0 - f) * scale), (p0 + 1, f * scale))):
            ok = (q >= 0) & (q < lim) & (w > 0)
            pixel = q * W + step if abs(s) >= abs(c) else step * W + q
            idx[v, :, :n_step, slot] = np.where(ok, pixel, 0)
            wts[v, :, :n_step, slot] = np.where(ok, w, 0.0)
    return idx.reshape(theta.size * n_det, 2 * L), wts.reshape(theta.size * n_det, 2 * L)


def _transpose_ell(idx, w, n_cols):
    """ELL tables of the transpose of the matrix whose ELL tables are ``(idx, w)``."""
    from scipy import sparse

    n_rows, k = idx.shape
    indptr = np.arange(0, n_rows * k + 1, k, dtype=np.int64)
    M = sparse.csr_matrix((w.reshape(-1), idx.reshape(-1), indptr), shape=(n_rows, n_cols), copy=True)
    M.eliminate_zeros()
    T = M.T.tocsr()
    T.sort_indices()
    counts = np.diff(T.indptr)
    kt = max(int(counts.max(initial=0)), 1)
    slot = np.arange(T.nnz) - np.repeat(T.indptr[:-1], counts)
    flat = np.repeat(np.arange(n_cols, dtype=np.int64) * kt, counts) + slot
    tidx = np.zeros(n_cols * kt, dtype=np.int32)
    tw = np.zeros(n_cols * kt, dtype=np.float64)
    tidx[flat] = T.indices
    tw[flat] = T.data
    return tidx.reshape(n_cols, kt), tw.reshape(n_cols, kt)


def _ramp_filter(n_det):
    """Frequency response of the band-limited Ram-Lak filter (Kak & Slaney, eq. 61), padded."""
    P = 1 << int(math.ceil(math.log2(max(2 * n_det, 2))))
    n = np.concatenate((np.arange(0, P // 2 + 1), np.arange(-(P // 2) + 1, 0)))
    h = np.zeros(P)
    h[0] = 0.25
    odd = n % 2 == 1
    h[odd] = -1.0 / (np.pi * n[odd]) ** 2
    return np.real(np.fft.fft(h)), P


class ParallelBeamCT(LinearOperator):
    r"""Parallel-beam Radon transform with its exact transpose (Joseph's method).

    For a ray at angle :math:`\theta` and detector offset :math:`t`, Joseph's method steps
    one pixel at a time along the axis the ray is most aligned with and linearly interpolates
    between the two nearest pixels of the other axis, weighting by the path length
    :math:`1/\max(|\sin\theta|, |\cos\theta|)`. The adjoint uses the transposed table of the
    same weights.

    Parameters
    ----------
    image_shape : (int, int)
        (H, W) of the images.
    angles : array-like of float
        Projection angles in degrees (:func:`sparse_view_angles`, :func:`limited_angle_angles`).
    n_detectors : int, optional
        Detector bins; default ``ceil(hypot(H, W))`` (363 for 256 x 256, as in DDS).
    normalize : bool, default False
        Divide the operator by its spectral norm (power iteration), so that
        :math:`\|A\|_2 = 1` (as deepinv's ``normalize=True``); ``scale_`` holds the factor.
    xp, device : namespace and device of the tables (default NumPy on the CPU)
    dtype : real floating dtype of the tables (default float64)
    backend : {"auto", "generic", "numba", "cuda"}
        Kernel used by :func:`subspacelab.kernels.ell_matvec`.

    Notes
    -----
    Images have shape ``(*batch, H, W)`` (a 3-D volume is a batch of slices: parallel beam is
    slice-separable); sinograms have shape ``(*batch, n_views, n_detectors)``. Complex input
    is refused: this is a real operator. The tables take about
    ``16 * n_views * n_detectors * 2 * max(H, W)`` bytes per direction in float64.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.operators import ParallelBeamCT, sparse_view_angles
    >>> A = ParallelBeamCT((16, 16), sparse_view_angles(8))
    >>> A.out_shape
    (8, 23)
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(16, 16)), rng.normal(size=(8, 23))
    >>> bool(np.isclose(np.sum(A.forward(x) * y), np.sum(x * A.adjoint(y))))
    True
    """

    complex_input = False

    def __init__(self, image_shape, angles, n_detectors=None, *, normalize=False, xp=None, device=None, dtype=None, backend="auto"):
        H, W = (int(s) for s in image_shape)
        if H < 1 or W < 1:
            raise ValueError(f"image_shape must be positive, got {image_shape}")
        theta = np.asarray(angles, dtype=np.float64).reshape(-1)
        if theta.size == 0 or not np.all(np.isfinite(theta)):
            raise ValueError("angles must be a non-empty array of finite angles in degrees")
        n_det = int(math.ceil(math.hypot(H, W))) if n_detectors is None else n_detectors
        check_param("n_detectors", n_det, "int", low=1)
        check_param("normalize", normalize, "bool")
        check_param("backend", backend, "option", options=("auto", "generic", "numba", "cuda"))
        if xp is None:
            import array_api_compat.numpy as xp
        self.xp, self.device, self.backend = xp, device, backend
        self.angles = theta
        self.in_shape = (H, W)
        self.out_shape = (theta.size, n_det)
        fi, fw = _joseph(H, W, theta, n_det)
        ai, aw = _transpose_ell(fi, fw, H * W)
        dtype = xp.float64 if dtype is None else dtype
        self._tables = [move_to(a, xp, device) for a in (fi, ai)]
        self._weights = [xp.astype(move_to(a, xp, device), dtype) for a in (fw, aw)]
        self.scale_ = 1.0
        if normalize:
            self.scale_ = 1.0 / self.opnorm(tol=1e-10, dtype=dtype)
            self._weights = [self.scale_ * w for w in self._weights]
        self._bp = None

    def _forward(self, x):
        xp = self.xp
        batch = tuple(x.shape[:-2])
        y = ell_matvec(self._tables[0], self._weights[0], xp.reshape(x, (*batch, -1)), backend=self.backend)
        return xp.reshape(y, (*batch, *self.out_shape))

    def _adjoint(self, y):
        xp = self.xp
        batch = tuple(y.shape[:-2])
        x = ell_matvec(self._tables[1], self._weights[1], xp.reshape(y, (*batch, -1)), backend=self.backend)
        return xp.reshape(x, (*batch, *self.in_shape))

    def fbp(self, sinogram):
        r"""Ramp-filtered back-projection, for initialisation and display only.

        The sinogram is filtered along the detector axis with the band-limited Ram-Lak
        filter (through ``xp.fft``) and back-projected with pixel-driven linear interpolation:
        :math:`\hat f(p) = \frac{\pi}{n_\text{views}}\sum_\theta Q_\theta(p\cdot n_\theta)`
        (the angles are assumed to cover [0, 180) evenly; for other sets it is only an
        approximation). It is not the inverse nor the pseudo-inverse of :math:`A`.

        Parameters
        ----------
        sinogram : array of shape ``(*batch, n_views, n_detectors)``

        Returns
        -------
        array of shape ``(*batch, H, W)``
        """
        self._check(sinogram, self.out_shape, "sinogram")
        xp = self.xp
        n_views, n_det = self.out_shape
        H, W = self.in_shape
        if self._bp is None:
            xs = np.arange(W) - (W - 1) / 2.0
            ys = (H - 1) / 2.0 - np.arange(H)
            yy, xx = np.meshgrid(ys, xs, indexing="ij")
            th = np.deg2rad(self.angles)[:, None]
            pos = xx.reshape(1, -1) * np.cos(th) + yy.reshape(1, -1) * np.sin(th) + (n_det - 1) / 2.0
            p0 = np.floor(pos).astype(np.int64)
            f = pos - p0
            view = np.arange(n_views)[:, None] * n_det
            idx0 = np.where((p0 >= 0) & (p0 < n_det), view + p0, 0)
            idx1 = np.where((p0 + 1 >= 0) & (p0 + 1 < n_det), view + p0 + 1, 0)
            w0 = np.where((p0 >= 0) & (p0 < n_det), 1.0 - f, 0.0)
            w1 = np.where((p0 + 1 >= 0) & (p0 + 1 < n_det), f, 0.0)
            idx = np.concatenate((idx0, idx1), axis=0).T.astype(np.int32)
            w = np.concatenate((w0, w1), axis=0).T * (np.pi / n_views)
            H_f, P = _ramp_filter(n_det)
            self._bp = (move_to(np.ascontiguousarray(idx), xp, self.device), move_to(np.ascontiguousarray(w), xp, self.device),
                        move_to(H_f, xp, self.device), P)
        idx, w, H_f, P = self._bp
        batch = tuple(sinogram.shape[:-2])
        pad = xp.zeros((*batch, n_views, P - n_det), dtype=sinogram.dtype, device=self.device)
        cdtype = xp.complex64 if sinogram.dtype == xp.float32 else xp.complex128
        spec = xp.fft.fft(xp.astype(xp.concat((sinogram, pad), axis=-1), cdtype), axis=-1)
        filt = xp.real(xp.fft.ifft(spec * xp.astype(H_f, sinogram.dtype), axis=-1))[..., :n_det]
        out = ell_matvec(idx, xp.astype(w, sinogram.dtype), xp.reshape(filt, (*batch, -1)), backend=self.backend)
        return xp.reshape(out, (*batch, H, W))
