r"""Blind intensity-harmonisation baselines and evaluation helpers (spec diffusion_flow.md §4.5).

Each baseline maps source images onto the intensity scale of a set of target-domain images
without any paired data, as a hospital would without a learned model:

* :func:`histogram_matching`: quantile mapping of every source image's foreground (brain mask)
  onto the **pooled** foreground histogram of the target images (not a match against a mean
  image, which blurs the histogram and does worse than nothing);
* :func:`zscore_normalize`: foreground standardisation, re-expressed in the target's pooled
  foreground mean and standard deviation;
* :func:`nyul_normalize`: Nyúl-Udupa piecewise-linear landmark standardisation (Nyúl, Udupa &
  Zhang, IEEE TMI 2000): foreground percentiles (1, 10, 20, ..., 90, 99) mapped linearly
  piece by piece onto the mean landmarks of the target images.

and the spatially aware :func:`template_standardize` (the first stage of
:class:`~subspacelab.BlindHarmonizer`): a smooth multiplicative field and a monotone intensity
map estimated against each source image's nearest target images.

Plus :func:`three_class_segmentation` (thresholds fixed once from target images by a
three-class Otsu search) and :func:`dice_score` for the "segmentation consistency" metric.
Images are NumPy arrays ``(n, H, W)`` (or one ``(H, W)``); the three baselines leave the
background (``<= foreground_threshold``) as it is.
"""

from __future__ import annotations

import numpy as np

from ._validation import check_param

__all__ = [
    "AUTO_NEIGHBORS",
    "NYUL_PERCENTILES",
    "dice_score",
    "histogram_matching",
    "multiotsu_thresholds",
    "nyul_normalize",
    "template_standardize",
    "three_class_segmentation",
    "zscore_normalize",
]

NYUL_PERCENTILES = (1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 99)


def _stack(X, name):
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 2:
        X = X[None]
    if X.ndim != 3 or 0 in X.shape:
        raise ValueError(f"{name} must be a non-empty stack of images (n, H, W) or one image (H, W), got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError(f"{name} must not contain NaN or infinity")
    return X


def _foregrounds(X, threshold, name):
    masks = X > threshold
    empty = np.flatnonzero(~masks.reshape(X.shape[0], -1).any(1))
    if empty.size:
        raise ValueError(f"{name} images {empty[:10].tolist()} have no pixel above foreground_threshold={threshold}")
    return masks


def _prepare(X, X_target, threshold):
    check_param("foreground_threshold", threshold, "real", low=0.0)
    single = np.ndim(X) == 2
    X = _stack(X, "X")
    T = _stack(X_target, "X_target")
    return X, T, _foregrounds(X, threshold, "X"), _foregrounds(T, threshold, "X_target"), single


def histogram_matching(X, X_target, *, foreground_threshold=0.05):
    """Quantile-map each image's foreground onto the pooled target foreground histogram.

    A source foreground pixel of rank r (of m) becomes the ``(r + 1/2)/m`` quantile of all
    target foreground pixels pooled; ties keep equal values (average ranks).

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.harmonization import histogram_matching
    >>> t = np.linspace(0.3, 1.0, 16).reshape(1, 4, 4)
    >>> bool(np.abs(histogram_matching(t ** 2, t) - t).max() < 0.025)  # up to quantile interpolation
    True
    """
    X, T, mx, mt, single = _prepare(X, X_target, foreground_threshold)
    pooled = np.sort(T[mt])
    out = X.copy()
    for i in range(X.shape[0]):
        vals = X[i][mx[i]]
        order = np.argsort(vals, kind="stable")
        ranks = np.empty(vals.size)
        ranks[order] = np.arange(vals.size)
        # average ranks of ties so equal source values stay equal
        _, inv = np.unique(vals, return_inverse=True)
        ranks = (np.bincount(inv, ranks) / np.bincount(inv))[inv]
        out[i][mx[i]] = np.quantile(pooled, (ranks + 0.5) / vals.size)
    return out[0] if single else out


def zscore_normalize(X, X_target, *, foreground_threshold=0.05):
    r"""Standardise each image's foreground and express it in the target's units:
    :math:`\mu_T + \sigma_T (x - \mu_x)/\sigma_x` (pooled target foreground :math:`\mu_T, \sigma_T`).

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.harmonization import zscore_normalize
    >>> t = np.linspace(0.2, 1.0, 16).reshape(1, 4, 4)
    >>> bool(np.allclose(zscore_normalize(0.5 * t + 0.1, t), t))
    True
    """
    X, T, mx, mt, single = _prepare(X, X_target, foreground_threshold)
    mu_t, sd_t = T[mt].mean(), T[mt].std()
    out = X.copy()
    for i in range(X.shape[0]):
        v = X[i][mx[i]]
        sd = v.std()
        if sd == 0:
            raise ValueError(f"X image {i} has a constant foreground; z-scoring needs contrast")
        out[i][mx[i]] = mu_t + sd_t * (v - v.mean()) / sd
    return out[0] if single else out


def nyul_normalize(X, X_target, *, percentiles=NYUL_PERCENTILES, foreground_threshold=0.05):
    """Nyúl piecewise-linear landmark standardisation onto the mean target landmarks.

    Landmarks are the foreground ``percentiles`` of each image; the standard scale is their
    mean over the target images. Between landmarks the map is linear; beyond the end
    landmarks it extends the first/last segment linearly.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.harmonization import nyul_normalize
    >>> t = np.linspace(0.2, 1.0, 64).reshape(1, 8, 8)
    >>> bool(np.allclose(nyul_normalize(0.5 * t + 0.1, t), t))
    True
    """
    X, T, mx, mt, single = _prepare(X, X_target, foreground_threshold)
    pct = np.asarray(percentiles, dtype=np.float64)
    if pct.ndim != 1 or pct.size < 2 or np.any(np.diff(pct) <= 0) or pct[0] < 0 or pct[-1] > 100:
        raise ValueError(f"percentiles must be increasing values in [0, 100], at least 2, got {percentiles}")
    standard = np.mean([np.percentile(T[j][mt[j]], pct) for j in range(T.shape[0])], axis=0)
    out = X.copy()
    for i in range(X.shape[0]):
        v = X[i][mx[i]]
        marks = np.percentile(v, pct)
        keep = np.concatenate(([True], np.diff(marks) > 0))  # drop repeated landmarks (flat histograms)
        m, s = marks[keep], standard[keep]
        if m.size < 2:
            raise ValueError(f"X image {i} has a constant foreground; landmarks need contrast")
        y = np.interp(v, m, s)
        lo, hi = v < m[0], v > m[-1]
        y[lo] = s[0] + (v[lo] - m[0]) * (s[1] - s[0]) / (m[1] - m[0])
        y[hi] = s[-1] + (v[hi] - m[-1]) * (s[-1] - s[-2]) / (m[-1] - m[-2])
        out[i][mx[i]] = y
    return out[0] if single else out


def _polynomial_basis(H, W, degree):
    r"""Monomials :math:`u^i v^j`, :math:`1 \le i + j \le` ``degree``, on [-1, 1]^2: (H, W, n_terms)."""
    v, u = np.meshgrid(np.linspace(-1.0, 1.0, H), np.linspace(-1.0, 1.0, W), indexing="ij")
    terms = [u**i * v**j for i in range(degree + 1) for j in range(degree + 1 - i) if i + j]
    return np.stack(terms, -1) if terms else np.zeros((H, W, 0))


#: Template sizes tried by ``template_standardize(n_neighbors="auto")``.
AUTO_NEIGHBORS = (2, 3, 5, 8, 12)


def template_standardize(X, X_target, *, n_neighbors="auto", field_degree=3, relative_variance_floor=1e-3,
                         std_floor=0.03, percentiles=NYUL_PERCENTILES, foreground_threshold=0.05,
                         return_n_neighbors=False):
    r"""Standardise source images against their nearest target images: remove a smooth
    multiplicative field, then map intensities monotonically onto the target's.

    For each source image :math:`x`:

    1. :math:`v` = :func:`nyul_normalize` of :math:`x` (target landmarks), only to compare it
       with target images;
    2. its :math:`k` target images of largest uncentred cosine with :math:`v`, with their
       per-pixel mean :math:`\mu` and variance :math:`\sigma^2` (a local template and where the
       target images disagree);
    3. a field :math:`\log b = \sum c_{ij} u^i v^j` (:math:`1 \le i + j \le` ``field_degree``,
       coordinates in [-1, 1]) by weighted least squares of :math:`\log(v/\mu)` on these
       monomials and a constant (dropped afterwards), over pixels where :math:`x`,
       :math:`v` and :math:`\mu` exceed ``foreground_threshold``, with weights
       :math:`1/(\sigma^2/\mu^2 + \epsilon)`, :math:`\epsilon` = ``relative_variance_floor``;
    4. a non-decreasing map :math:`T`: the weighted isotonic regression of :math:`\mu` on
       :math:`x/b` over the same pixels; the foreground becomes :math:`y = T(x/b)`;
    5. the background (:math:`x \le` ``foreground_threshold``) becomes the median of the
       target's background pixels (0 for skull-stripped or noise-free targets).

    ``n_neighbors="auto"`` runs steps 2-4 for every :math:`k` in :data:`AUTO_NEIGHBORS` (up to
    the number of target images) and keeps, per image, the result most likely under the
    template seen as independent per-pixel Gaussians :math:`N(\mu_k, s_k^2)`,
    :math:`s_k^2 = \hat\sigma_k^2 + s_0^2` (unbiased variance over the :math:`k` neighbours plus
    ``std_floor`` :math:`s_0` squared), i.e. the smallest mean over the foreground of
    :math:`(y_k - \mu_k)^2 / s_k^2 + \log s_k^2`. Few neighbours fit when the target images
    are near copies of the source's anatomy (adjacent slices of one brain), many when they are
    different subjects; the best fixed :math:`k` differs between those cases (2 and 12 on our
    validation data), the automatic choice was within 0.1 dB of it on both.

    The map is monotone, so the output never inverts the source's contrast. Blind: only target
    images are used.

    Parameters
    ----------
    X : array (n, H, W) or (H, W)
        Source images.
    X_target : array (m, H, W)
        Target images of the same shape.
    n_neighbors : "auto" or int, default="auto"
        Target images per template (an int: at most m).
    field_degree : int, default=3
        Degree of the log-polynomial field; 0 estimates no field.
    relative_variance_floor : float, default=1e-3
        :math:`\epsilon` above: the weight of a pixel where the neighbours agree exactly.
    std_floor : float, default=0.03
        :math:`s_0` of the automatic choice (intensity units of [0, 1] images; chosen on
        validation data).
    percentiles : sequence of float
        Nyúl landmarks of step 1.
    foreground_threshold : float, default=0.05
    return_n_neighbors : bool, default=False
        Also return the template size used for every image.

    Returns
    -------
    ndarray like X (float64)
    n_neighbors : ndarray of int, shape (n,), only with ``return_n_neighbors``

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.harmonization import template_standardize
    >>> yy, xx = np.mgrid[-1:1:32j, -1:1:32j]
    >>> target = np.stack([np.where(xx**2 + yy**2 < r, 0.4 + 0.5 * (np.abs(xx) < 0.3), 0.0)
    ...                    for r in (0.6, 0.7, 0.8)])
    >>> source = (target[1] * (1 + 0.2 * xx)) ** 1.5          # a field and a gamma
    >>> out = template_standardize(source, target, n_neighbors=1)
    >>> bool(np.abs(out - target[1]).max() < 0.03)
    True
    """
    X, T, mx, mt, single = _prepare(X, X_target, foreground_threshold)
    m = T.shape[0]
    if isinstance(n_neighbors, str):
        check_param("n_neighbors", n_neighbors, "option", options=("auto",))
        sizes = tuple(k for k in AUTO_NEIGHBORS if k <= m) or (m,)
    else:
        sizes = (check_param("n_neighbors", n_neighbors, "int", low=1, high=m),)
    check_param("field_degree", field_degree, "int", low=0)
    check_param("relative_variance_floor", relative_variance_floor, "real", low=0.0, closed="neither")
    check_param("std_floor", std_floor, "real", low=0.0, closed="neither")
    if X.shape[1:] != T.shape[1:]:
        raise ValueError(f"X has images of shape {X.shape[1:]} but X_target has {T.shape[1:]}; the template "
                         "needs one image shape")
    background = float(np.median(T[~mt])) if (~mt).any() else 0.0
    V = nyul_normalize(X, T, percentiles=percentiles, foreground_threshold=foreground_threshold)
    Tf = T.reshape(m, -1)
    cos = V.reshape(X.shape[0], -1) @ Tf.T / np.maximum(np.linalg.norm(Tf, axis=1), 1e-12)
    order = np.argsort(-cos, axis=1, kind="stable")
    basis = _polynomial_basis(X.shape[1], X.shape[2], field_degree)
    out = np.empty_like(X)
    chosen = np.empty(X.shape[0], dtype=np.int64)
    for i in range(X.shape[0]):
        best = None
        for k in sizes:
            y, mu, var = _fit_to_template(X[i], V[i], T[order[i, :k]], mx[i], basis, relative_variance_floor,
                                          foreground_threshold, background, i)
            # the template as independent per-pixel Gaussians (unbiased variance plus the floor)
            s2 = (var * k / (k - 1) if k > 1 else 0.0) + std_floor**2
            score = float(np.mean(((y - mu) ** 2 / s2 + np.log(s2))[mx[i]])) if len(sizes) > 1 else 0.0
            if best is None or score < best[0]:
                best = (score, y, k)
        out[i], chosen[i] = best[1], best[2]
    out = out[0] if single else out
    return (out, chosen) if return_n_neighbors else out


def _fit_to_template(x, v, nb, fg, basis, eps, threshold, background, index):
    """Steps 3-5 of :func:`template_standardize` for one image against neighbours ``nb``:
    (standardised image, template mean, template variance)."""
    from sklearn.isotonic import IsotonicRegression

    mu, var = nb.mean(0), nb.var(0)
    use = fg & (mu > threshold) & (v > threshold)
    if use.sum() < basis.shape[-1] + 2:
        raise ValueError(f"X image {index} overlaps its nearest target images on {int(use.sum())} foreground "
                         "pixels, too few to estimate a field and an intensity map")
    w = 1.0 / (var[use] / mu[use] ** 2 + eps)
    xc = x
    if basis.shape[-1]:
        sw = np.sqrt(w)
        A = np.concatenate([basis[use], np.ones((int(use.sum()), 1))], 1) * sw[:, None]
        coef, *_ = np.linalg.lstsq(A, np.log(v[use] / mu[use]) * sw, rcond=None)
        xc = x * np.exp(-(basis @ coef[:-1]))
    iso = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(xc[use], mu[use], sample_weight=w)
    return np.where(fg, iso.predict(xc.ravel()).reshape(xc.shape), background), mu, var


def multiotsu_thresholds(X, *, n_classes=3, foreground_threshold=0.05, n_bins=256):
    """Multi-Otsu thresholds (maximal between-class variance) of the pooled foreground of ``X``.

    Exhaustive search over histogram bin edges (``n_classes`` = 3: two thresholds).

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.harmonization import multiotsu_thresholds
    >>> img = np.repeat([0.2, 0.5, 0.9], 12).reshape(1, 6, 6)
    >>> t = multiotsu_thresholds(img)
    >>> bool(0.2 < t[0] < 0.5 < t[1] < 0.9)
    True
    """
    check_param("n_classes", n_classes, "option", options=(2, 3))
    X = _stack(X, "X")
    vals = X[_foregrounds(X, foreground_threshold, "X")]
    hist, edges = np.histogram(vals, bins=n_bins)
    p = hist / hist.sum()
    centres = 0.5 * (edges[1:] + edges[:-1])
    w = np.concatenate(([0.0], np.cumsum(p)))
    mu = np.concatenate(([0.0], np.cumsum(p * centres)))

    def between(a, b):  # classes [a, b) of bins
        wk = w[b] - w[a]
        return np.where(wk > 0, (mu[b] - mu[a]) ** 2 / np.where(wk > 0, wk, 1.0), 0.0)

    if n_classes == 2:
        k = np.arange(1, n_bins)
        best = np.argmax(between(0, k) + between(k, n_bins))
        return np.array([edges[k[best]]])
    i, j = np.triu_indices(n_bins, 1)
    i, j = i[i >= 1], j[i >= 1]
    score = between(0, i) + between(i, j) + between(j, n_bins)
    b = np.argmax(score)
    return np.array([edges[i[b]], edges[j[b]]])


def three_class_segmentation(X, thresholds, *, foreground_threshold=0.05):
    """Labels 0 (background), 1, 2, 3 (tissue classes split at the two ``thresholds``).

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.harmonization import three_class_segmentation
    >>> three_class_segmentation(np.array([[0.0, 0.3, 0.6, 0.9]]), (0.4, 0.8)).tolist()
    [[[0, 1, 2, 3]]]
    """
    X = _stack(X, "X")
    t = np.asarray(thresholds, dtype=np.float64)
    if t.shape != (2,) or not t[0] < t[1]:
        raise ValueError(f"thresholds must be two increasing values, got {thresholds}")
    labels = 1 + np.digitize(X, t)
    labels[X <= foreground_threshold] = 0
    return labels


def dice_score(labels_a, labels_b, classes=(1, 2, 3)):
    """Mean Dice over ``classes`` per image (classes absent from both images count as 1).

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.harmonization import dice_score
    >>> a = np.array([[1, 1, 2, 3]])
    >>> dice_score(a, a).tolist(), dice_score(a, np.array([[1, 2, 2, 3]])).round(3).tolist()
    ([1.0], [0.778])
    """
    a, b = np.asarray(labels_a), np.asarray(labels_b)
    if a.shape != b.shape:
        raise ValueError(f"label maps must have one shape, got {a.shape} and {b.shape}")
    if a.ndim == 2:
        a, b = a[None], b[None]
    scores = []
    for c in classes:
        inter = ((a == c) & (b == c)).reshape(a.shape[0], -1).sum(1)
        tot = (a == c).reshape(a.shape[0], -1).sum(1) + (b == c).reshape(a.shape[0], -1).sum(1)
        scores.append(np.where(tot > 0, 2.0 * inter / np.where(tot > 0, tot, 1), 1.0))
    return np.mean(scores, axis=0)
