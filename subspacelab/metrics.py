r"""Evaluation metrics on any array-API backend: PSNR, SSIM and the inpainting boundary mismatch
for images; clustering accuracy.

PSNR and SSIM reduce over the last two (image) axes and keep leading batch axes, so a stack of
images gives one value per image. ``data_range`` is always explicit (spec diffusion_flow.md section 8,
item 19: scikit-image infers it from the dtype, which silently changes the result).
Clustering accuracy matches clusters to classes by the Hungarian method.
"""

from __future__ import annotations

import math

import numpy as np

from ._backend import get_namespace, is_array_api_obj, supported_float_dtypes, to_numpy
from ._validation import check_param

__all__ = ["boundary_mismatch", "clustering_accuracy", "psnr", "ssim"]


def _pair(reference, estimate):
    xp, dev = get_namespace(reference, estimate, names=["reference", "estimate"])
    for name, a in (("reference", reference), ("estimate", estimate)):
        if not xp.isdtype(a.dtype, ("real floating", "integral")):
            raise TypeError(f"{name} must be real (take the magnitude of complex images first), got {a.dtype}")
        if a.ndim < 2:
            raise ValueError(f"{name} must have at least 2 dimensions (H, W), got shape {tuple(a.shape)}")
    if tuple(reference.shape) != tuple(estimate.shape):
        raise ValueError(f"reference and estimate must have one shape, got {tuple(reference.shape)} and {tuple(estimate.shape)}")
    dt = supported_float_dtypes(xp, dev)[0]
    ref, est = xp.astype(reference, dt), xp.astype(estimate, dt)
    for name, a in (("reference", ref), ("estimate", est)):
        if not bool(xp.all(xp.isfinite(a))):
            raise ValueError(f"{name} must not contain NaN or infinity")
    return xp, dev, ref, est


def psnr(reference, estimate, *, data_range):
    r"""Peak signal-to-noise ratio :math:`10\log_{10}(R^2 / \mathrm{MSE})` in dB.

    Parameters
    ----------
    reference, estimate : real arrays of shape ``(*batch, H, W)``
    data_range : float
        :math:`R`, the range of the reference's values (e.g. 1.0 for images in [0, 1]).

    Returns
    -------
    array of shape ``batch`` (0-d for one image); ``inf`` where the images are equal.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.metrics import psnr
    >>> float(psnr(np.zeros((4, 4)), np.full((4, 4), 0.1), data_range=1.0))
    20.0
    """
    xp, dev, ref, est = _pair(reference, estimate)
    check_param("data_range", data_range, "real", low=0.0, closed="neither")
    mse = xp.mean((ref - est) ** 2, axis=(-2, -1))
    safe = xp.where(mse > 0, mse, xp.ones_like(mse))
    val = 10.0 * xp.log10(data_range**2 / safe)
    return xp.where(mse > 0, val, xp.full_like(mse, math.inf))


def _box_mean(a, w, xp):
    """Means over all fully-inside ``w x w`` windows (an integral image; 'valid' positions)."""
    c = xp.cumulative_sum(xp.cumulative_sum(a, axis=-1, include_initial=True), axis=-2, include_initial=True)
    s = c[..., w:, w:] - c[..., :-w, w:] - c[..., w:, :-w] + c[..., :-w, :-w]
    return s / (w * w)


def ssim(reference, estimate, *, data_range, win_size=7, k1=0.01, k2=0.03):
    r"""Mean structural similarity (Wang et al. 2004) with a uniform window.

    .. math::

        \mathrm{SSIM} = \frac{(2\mu_x\mu_y + C_1)(2\sigma_{xy} + C_2)}
            {(\mu_x^2 + \mu_y^2 + C_1)(\sigma_x^2 + \sigma_y^2 + C_2)},
        \quad C_1 = (k_1 R)^2,\ C_2 = (k_2 R)^2,

    with local statistics over ``win_size x win_size`` windows (sample covariances, factor
    :math:`N/(N-1)`), averaged over the windows that lie fully inside the image. This is
    scikit-image's ``structural_similarity`` default (``win_size=7``, uniform filter,
    ``use_sample_covariance=True``, borders cropped), which it matches to rounding.

    Parameters
    ----------
    reference, estimate : real arrays of shape ``(*batch, H, W)``, H and W >= ``win_size``
    data_range : float
    win_size : odd int >= 3
    k1, k2 : float

    Returns
    -------
    array of shape ``batch``; 1 for identical images.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.metrics import ssim
    >>> x = np.random.default_rng(0).random((16, 16))
    >>> float(ssim(x, x, data_range=1.0))
    1.0
    """
    xp, dev, x, y = _pair(reference, estimate)
    check_param("data_range", data_range, "real", low=0.0, closed="neither")
    check_param("win_size", win_size, "int", low=3)
    if win_size % 2 == 0:
        raise ValueError(f"win_size must be odd, got {win_size}")
    if x.shape[-1] < win_size or x.shape[-2] < win_size:
        raise ValueError(f"images must be at least win_size={win_size} pixels on each side, got shape {tuple(x.shape)}")
    check_param("k1", k1, "real", low=0.0)
    check_param("k2", k2, "real", low=0.0)
    n = win_size * win_size
    cov = n / (n - 1)
    ux, uy = _box_mean(x, win_size, xp), _box_mean(y, win_size, xp)
    vx = cov * (_box_mean(x * x, win_size, xp) - ux * ux)
    vy = cov * (_box_mean(y * y, win_size, xp) - uy * uy)
    vxy = cov * (_box_mean(x * y, win_size, xp) - ux * uy)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return xp.mean(s, axis=(-2, -1))


def _labels_1d(y, name):
    if not is_array_api_obj(y):
        y = np.asarray(y)
    y = np.asarray(to_numpy(y))
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-dimensional, got shape {y.shape}")
    if y.shape[0] == 0:
        raise ValueError(f"{name} must not be empty")
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        raise ValueError(f"{name} must not contain NaN or infinity")
    return y


def clustering_accuracy(y_true, y_pred):
    r"""Clustering accuracy: the best one-to-one matching of clusters to classes.

    .. math::

        \mathrm{ACC} = \max_{\sigma} \frac1n \sum_{i=1}^n \mathbb 1\{y_i = \sigma(\hat y_i)\},

    where :math:`\sigma` ranges over the injective maps from predicted clusters to true classes
    (clusters left unmatched, when there are more clusters than classes, count as errors). The
    maximisation is a linear assignment problem on the contingency table, solved exactly by the
    Hungarian method (:func:`scipy.optimize.linear_sum_assignment`). Labels may be any hashable
    values (integers, strings); they are compared only for equality.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Ground-truth classes.
    y_pred : array-like of shape (n_samples,)
        Predicted cluster labels.

    Returns
    -------
    accuracy : float
        In [0, 1]; 1 exactly when the partitions coincide up to a relabelling.

    Examples
    --------
    >>> from subspacelab.metrics import clustering_accuracy
    >>> clustering_accuracy([0, 0, 1, 1, 2, 2], [2, 2, 0, 0, 1, 1])
    1.0
    >>> clustering_accuracy([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 1])
    0.8333333333333334
    """
    from scipy.optimize import linear_sum_assignment

    y_true = _labels_1d(y_true, "y_true")
    y_pred = _labels_1d(y_pred, "y_pred")
    if y_true.shape[0] != y_pred.shape[0]:
        raise ValueError(
            f"y_true and y_pred must have the same length, got {y_true.shape[0]} and {y_pred.shape[0]}"
        )
    _, t = np.unique(y_true, return_inverse=True)
    _, p = np.unique(y_pred, return_inverse=True)
    table = np.zeros((p.max() + 1, t.max() + 1), dtype=np.int64)
    np.add.at(table, (p, t), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum()) / y_true.shape[0]


def boundary_mismatch(estimate, reference, mask):
    r"""Seam measure of inpainting: error of the finite differences across the mask border.

    Over the set :math:`E` of 4-neighbour pixel pairs :math:`(p, q)` with one pixel revealed
    and the other hidden (:math:`m_p \ne m_q`),

    .. math::

        \mathrm{BM} = \frac{1}{|E|}\sum_{(p,q)\in E}
            \big|(\hat x_q - \hat x_p) - (x_q - x_p)\big|,

    the mean absolute mismatch between the estimate's and the reference's image gradient across
    the border. It is 0 when the estimate continues the revealed region exactly as the
    reference does, and large when a filled region meets the revealed one with a seam (a jump
    the reference does not have). LPIPS, the reference's coherence measure, needs network
    weights that cannot be obtained offline (spec diffusion_flow.md section 0, item 7).

    Parameters
    ----------
    estimate, reference : real arrays of shape ``(*batch, H, W)``
    mask : array of shape ``(H, W)`` or ``(*batch, H, W)``
        1 (or True) = revealed, 0 = hidden; it must have at least one border pair per image.

    Returns
    -------
    array of shape ``batch`` (0-d for one image)

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.metrics import boundary_mismatch
    >>> ref = np.zeros((4, 4))
    >>> mask = np.ones((4, 4)); mask[:, 2:] = 0
    >>> est = ref.copy(); est[:, 2:] = 1.0  # a filled half with a seam of height 1
    >>> float(boundary_mismatch(est, ref, mask))
    1.0
    """
    xp, dev, ref, est = _pair(reference, estimate)
    mxp, _ = get_namespace(mask, names=["mask"])
    if mxp is not xp:
        raise TypeError(f"mask must be an array of the images' namespace {xp.__name__!r}, got {mxp.__name__!r}")
    if mask.ndim < 2 or tuple(mask.shape) != tuple(ref.shape[ref.ndim - mask.ndim:]):
        raise ValueError(f"mask must have shape {tuple(ref.shape[-2:])} or {tuple(ref.shape)}, got {tuple(mask.shape)}")
    m = xp.astype(mask, ref.dtype)
    if not bool(xp.all((m == 0) | (m == 1))):
        raise ValueError("mask must contain only 0 and 1 (1 = revealed) or booleans")
    m = xp.broadcast_to(m, ref.shape)
    total = xp.zeros(ref.shape[:-2], dtype=ref.dtype, device=dev)
    count = xp.zeros(ref.shape[:-2], dtype=ref.dtype, device=dev)
    for axis in (-1, -2):
        n = ref.shape[axis]
        lo = (slice(None),) * (ref.ndim + axis) + (slice(0, n - 1), ...)
        hi = (slice(None),) * (ref.ndim + axis) + (slice(1, n), ...)
        edge = xp.abs(m[hi] - m[lo])
        err = xp.abs((est[hi] - est[lo]) - (ref[hi] - ref[lo]))
        total = total + xp.sum(edge * err, axis=(-2, -1))
        count = count + xp.sum(edge, axis=(-2, -1))
    if not bool(xp.all(count > 0)):
        raise ValueError("every image's mask must have revealed and hidden neighbouring pixels (a border)")
    return total / count
