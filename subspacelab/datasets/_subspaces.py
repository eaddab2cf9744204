"""Synthetic unions of (warped) linear subspaces, the test bed of subspace clustering."""

from __future__ import annotations

import numbers

import numpy as np

from .._backend import check_random_state
from .._validation import check_param

__all__ = ["make_union_of_subspaces"]


def make_union_of_subspaces(
    n_samples_per_subspace=100,
    subspace_dims=(3, 3, 3, 3, 3),
    ambient_dim=30,
    *,
    overlap=0.0,
    warp=0.0,
    noise=0.05,
    shuffle=False,
    random_state=None,
):
    r"""Points near a union of linear subspaces, optionally warped into curved manifolds.

    For each subspace :math:`k` a basis :math:`U_k \in \mathbb R^{D\times d_k}` is drawn as

    .. math::

        U_k = \operatorname{orth}\!\left(\sqrt{1-\rho}\, G_k + \sqrt{\rho}\, G_0\right),

    with independent standard Gaussian :math:`G_0, G_k` (:math:`G_0` shared by every subspace,
    only its first :math:`d_k` columns used). ``overlap`` :math:`\rho = 0` gives independent
    random subspaces; as :math:`\rho \to 1` all subspaces approach the same one, so their
    principal angles shrink. A point is :math:`x = U_k c / \lVert U_k c\rVert` with Gaussian
    coefficients :math:`c`. With ``warp`` :math:`w > 0` each point is bent by the smooth map

    .. math::

        x \mapsto \frac{x + w \tanh(A x)}{\lVert x + w \tanh(A x)\rVert},
        \qquad A_{ij} \sim \mathcal N(0, 1/D)\ \text{(one fixed draw)},

    so that every piece becomes a curved manifold (the same map for all of them). Finally
    i.i.d. Gaussian noise of standard deviation ``noise`` is added to every coordinate (after
    the renormalisation, so points lie near, not on, the unit sphere).

    Parameters
    ----------
    n_samples_per_subspace : int or sequence of int, default=100
        Points drawn from each subspace (one int for all of them, or one per subspace).
    subspace_dims : sequence of int, default=(3, 3, 3, 3, 3)
        Dimension :math:`d_k \ge 1` of each subspace; its length is the number of subspaces.
    ambient_dim : int, default=30
        Ambient dimension :math:`D \ge \max_k d_k`.
    overlap : float in [0, 1), default=0.0
        Weight :math:`\rho` of the shared Gaussian component of the bases (smaller principal
        angles as it grows).
    warp : float >= 0, default=0.0
        Strength :math:`w` of the nonlinear warp (0: flat subspaces).
    noise : float >= 0, default=0.05
        Standard deviation of the additive Gaussian noise.
    shuffle : bool, default=False
        Shuffle the samples (otherwise they are grouped by subspace).
    random_state : int, numpy.random.Generator or None
        Seed of every draw.

    Returns
    -------
    X : ndarray of shape (n_samples, ambient_dim), float64
    y : ndarray of shape (n_samples,), int64
        Index of the subspace each point comes from.
    bases : ndarray of shape (n_subspaces, ambient_dim, max(subspace_dims))
        Orthonormal bases :math:`U_k`, zero-padded to the largest dimension (before the warp).

    Examples
    --------
    >>> from subspacelab.datasets import make_union_of_subspaces
    >>> X, y, bases = make_union_of_subspaces(10, (2, 3), 5, random_state=0)
    >>> X.shape, y.tolist().count(1), bases.shape
    ((20, 5), 10, (2, 5, 3))
    """
    dims = [int(check_param("subspace_dims[i]", d, "int", low=1)) for d in subspace_dims]
    if not dims:
        raise ValueError("subspace_dims must name at least one subspace")
    n_sub = len(dims)
    if isinstance(n_samples_per_subspace, numbers.Integral):
        counts = [n_samples_per_subspace] * n_sub
    else:
        counts = list(n_samples_per_subspace)
        if len(counts) != n_sub:
            raise ValueError(
                f"n_samples_per_subspace has {len(counts)} entries but subspace_dims has {n_sub}"
            )
    counts = [int(check_param("n_samples_per_subspace", c, "int", low=1)) for c in counts]
    D = int(check_param("ambient_dim", ambient_dim, "int", low=1))
    if max(dims) > D:
        raise ValueError(f"subspace_dims must not exceed ambient_dim={D}, got {max(dims)}")
    rho = float(check_param("overlap", overlap, "real", low=0.0, high=1.0, closed="left"))
    w = float(check_param("warp", warp, "real", low=0.0))
    sigma = float(check_param("noise", noise, "real", low=0.0))
    check_param("shuffle", shuffle, "bool")
    rng = check_random_state(random_state)

    d_max = max(dims)
    shared = rng.standard_normal((D, d_max))
    bases = np.zeros((n_sub, D, d_max))
    X, y = [], []
    for k, (dk, nk) in enumerate(zip(dims, counts)):
        g = np.sqrt(1.0 - rho) * rng.standard_normal((D, dk)) + np.sqrt(rho) * shared[:, :dk]
        U, _ = np.linalg.qr(g)
        bases[k, :, :dk] = U
        pts = rng.standard_normal((nk, dk)) @ U.T
        X.append(pts / np.linalg.norm(pts, axis=1, keepdims=True))
        y.append(np.full(nk, k, dtype=np.int64))
    X, y = np.concatenate(X), np.concatenate(y)
    A = rng.standard_normal((D, D)) / np.sqrt(D)
    if w > 0:
        X = X + w * np.tanh(X @ A.T)
        X /= np.linalg.norm(X, axis=1, keepdims=True)
    X = X + sigma * rng.standard_normal(X.shape)
    if shuffle:
        order = rng.permutation(X.shape[0])
        X, y = X[order], y[order]
    return X, y, bases
