"""Synthetic low-rank matrix-completion problems."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.utils import Bunch

from .._backend import check_random_state
from .._validation import check_param

__all__ = ["make_low_rank_matrix_completion", "oversampling_to_probability"]


def oversampling_to_probability(m, n, rank, oversampling):
    r"""Sampling probability giving :math:`E|\Omega| = \rho\, k(m+n-k)` observed entries.

    :math:`k(m+n-k)` is the number of degrees of freedom of a rank-:math:`k` :math:`m \times n`
    matrix, so :math:`\rho = 1` is the information-theoretic floor.

    Examples
    --------
    >>> round(oversampling_to_probability(100, 100, 5, 2.0), 4)
    0.195
    """
    return float(oversampling) * rank * (m + n - rank) / (m * n)


def make_low_rank_matrix_completion(
    m,
    n,
    rank,
    *,
    sampling=0.2,
    noise=0.0,
    coherence=0.0,
    condition_number=1.0,
    scheme="uniform",
    dense=True,
    random_state=None,
):
    r"""A random rank-``rank`` matrix and a random set of its entries.

    The matrix is :math:`M = U V^\top` with :math:`U = Q_U \operatorname{diag}(s)\, c`,
    :math:`V = Q_V`, where :math:`Q_U, Q_V` are the Q factors of Gaussian matrices (incoherent:
    :math:`\mu = O(\log n)`), :math:`s` is geometric from 1 down to :math:`1/\kappa`, and the
    constant :math:`c` scales the entries of :math:`M` to unit mean square. Observed entries
    carry Gaussian noise of standard deviation ``noise`` (relative to the unit entry scale).

    Parameters
    ----------
    m, n : int
        Shape of the matrix.
    rank : int
        :math:`k`, ``1 <= rank <= min(m, n)``.
    sampling : float, default 0.2
        Probability :math:`p \in (0, 1]` that an entry is observed (independently;
        :func:`oversampling_to_probability` converts an oversampling ratio).
    noise : float, default 0.0
        Standard deviation of the additive noise on the observations.
    coherence : float, default 0.0
        0 gives incoherent factors. A positive value multiplies row :math:`i` of :math:`Q_U`
        (and row :math:`j` of :math:`Q_V`) by :math:`(1 + i)^{-\text{coherence}}` before the
        QR, concentrating the singular subspaces on a few spiky rows.
    condition_number : float, default 1.0
        :math:`\kappa = \sigma_1/\sigma_k \ge 1`.
    scheme : {"uniform", "power_law"}, default "uniform"
        ``"uniform"``: each entry observed independently with probability p (above
        :math:`2^{24}` entries, :math:`\mathrm{Binomial}(mn, p)` coordinates are drawn with
        replacement and deduplicated instead of forming an :math:`mn` mask, which observes
        slightly fewer entries). ``"power_law"``: entry :math:`(i, j)` is observed with
        probability :math:`\min(1, c\, w_i w_j)`, where :math:`w_i = r_i^{-1/2}` for a random
        ranking :math:`r` of the rows (likewise columns) and :math:`c` gives the expected
        count :math:`pmn` before capping (MovieLens-like degree skew).
    dense : bool, default True
        Return ``X`` as a dense array with NaN for missing entries; otherwise as a
        ``scipy.sparse.csr_array`` whose stored entries are the observations.
    random_state : int, numpy.random.Generator or None

    Returns
    -------
    Bunch
        ``X`` (observations), ``U`` (m, k) and ``V`` (n, k) with ``M = U @ V.T``,
        ``rows``, ``cols``, ``entries`` (the observations as coordinates), ``sampling``
        (the probability used) and ``noise``.

    Examples
    --------
    >>> from subspacelab.datasets import make_low_rank_matrix_completion
    >>> d = make_low_rank_matrix_completion(50, 40, 3, sampling=0.5, random_state=0)
    >>> d.X.shape, d.U.shape, d.V.shape
    ((50, 40), (50, 3), (40, 3))
    """
    check_param("m", m, "int", low=1)
    check_param("n", n, "int", low=1)
    check_param("rank", rank, "int", low=1, high=min(m, n))
    check_param("sampling", sampling, "real", low=0.0, high=1.0, closed="right")
    check_param("noise", noise, "real", low=0.0)
    check_param("coherence", coherence, "real", low=0.0)
    check_param("condition_number", condition_number, "real", low=1.0)
    check_param("scheme", scheme, "option", options=("uniform", "power_law"))
    check_param("dense", dense, "bool")
    rng = check_random_state(random_state)
    k = int(rank)

    def factor(size):
        G = rng.standard_normal((size, k))
        if coherence > 0:
            G *= (1.0 + np.arange(size))[:, None] ** (-float(coherence))
            G = G[rng.permutation(size)]
        return np.linalg.qr(G)[0]

    QU, QV = factor(m), factor(n)
    s = np.geomspace(1.0, 1.0 / float(condition_number), k)
    scale = np.sqrt(m * n / np.sum(s**2))  # ||M||_F^2 = sum s^2 scale^2 = m n
    U = QU * (s * scale)
    V = QV
    if scheme == "uniform":
        mask_count = rng.binomial(m * n, sampling) if m * n > 2**24 else None
        if mask_count is None:
            obs = np.flatnonzero(rng.random(m * n) < sampling)
        else:  # large matrices: sample coordinates without forming an m*n mask
            obs = np.unique(rng.integers(0, m * n, size=int(mask_count * 1.0)))
        rows, cols = np.divmod(obs, n)
    else:
        wr = (1.0 + rng.permutation(m)) ** -0.5
        wc = (1.0 + rng.permutation(n)) ** -0.5
        P = np.minimum(1.0, np.outer(wr, wc) * (sampling * m * n / (wr.sum() * wc.sum())))
        rows, cols = np.nonzero(rng.random((m, n)) < P)
    rows = rows.astype(np.int64)
    cols = cols.astype(np.int64)
    values = np.einsum("pk,pk->p", U[rows], V[cols])
    if noise > 0:
        values = values + float(noise) * rng.standard_normal(values.size)
    if dense:
        X = np.full((m, n), np.nan)
        X[rows, cols] = values
    else:
        X = sp.csr_array((values, (rows, cols)), shape=(m, n))
    return Bunch(X=X, U=U, V=V, rows=rows, cols=cols, entries=values, sampling=float(sampling), noise=float(noise))
