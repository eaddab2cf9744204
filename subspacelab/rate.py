r"""Coding rates and rate reductions: the objectives of MCR², MLC and CRATE.

Every function here is plain array-API code: it works in the namespace and on the device of its
inputs (NumPy, PyTorch, CuPy, array_api_strict, ...), keeps float32 input in float32, returns
arrays (0-d, or with the leading batch dimensions of ``Z``) and, called on torch tensors that
require grad, is differentiated by torch autograd. The ``*_grad`` functions give the same
derivatives in closed form, for solvers that run without autograd (NumPy, CuPy).

Conventions
-----------
* **Rows are samples**, as in scikit-learn: ``Z`` has shape ``(n_samples, n_features)``, written
  ``(n, d)`` below, optionally with leading batch dimensions ``(..., n, d)``. The papers write
  samples as columns; every formula below is the row form (``Z^T Z`` is ``d x d``).
* ``eps_sq`` is the **squared** distortion :math:`\varepsilon^2` (the quantity the official MCR²,
  MLC/CPP and CRATE code call ``eps``).
* Logarithms are natural: rates are in nats.
* ``membership`` is either integer labels of shape ``(n,)`` (hard clusters, label ``k`` is cluster
  ``k``) or nonnegative soft memberships of shape ``(n, K)`` (or ``(..., n, K)`` with the batch
  dimensions of ``Z``) whose column ``k`` is the diagonal of :math:`\Pi_k`. Rows should sum to
  one for :math:`\Delta R \ge 0` to hold; this is not enforced, so that the nearly doubly
  stochastic :math:`n \times n` matrix :math:`\Gamma` of MLC (columns are clusters) can be
  passed as it is.

References
----------
.. [1] Y. Yu, K. H. R. Chan, C. You, C. Song, Y. Ma, "Learning Diverse and Discriminative
   Representations via the Principle of Maximal Coding Rate Reduction", NeurIPS 2020.
.. [2] T. Ding, S. Tong, K. H. R. Chan, X. Dai, Y. Ma, B. D. Haeffele, "Unsupervised Manifold
   Linearizing and Clustering", ICCV 2023.
.. [3] Y. Yu, S. Buchanan, D. Pai, T. Chu, Z. Wu, S. Tong, B. D. Haeffele, Y. Ma, "White-Box
   Transformers via Sparse Rate Reduction", NeurIPS 2023.
.. [4] Y. Ma, H. Derksen, W. Hong, J. Wright, "Segmentation of Multivariate Mixed Data via
   Lossy Data Coding and Compression", IEEE TPAMI 29(9), 2007.
"""

from __future__ import annotations

import math

from ._backend import get_namespace
from ._validation import check_array, check_param

__all__ = [
    "coding_length",
    "coding_rate",
    "coding_rate_grad",
    "compressed_coding_rate",
    "compressed_coding_rate_grad",
    "rate_reduction",
    "rate_reduction_grad",
    "sparse_rate_reduction",
    "subspace_compressed_rate",
    "subspace_compressed_rate_grad",
]

# Upper bound on the number of array elements of the per-chunk intermediates of the soft
# compressed rate (about 32 MiB in float64). Clusters are processed in chunks that fit it.
_MAX_CHUNK_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------------------------
# validation


def _check_eps_sq(eps_sq):
    return float(check_param("eps_sq", eps_sq, "real", low=0.0, closed="neither"))


def _check_Z(Z, name="Z"):
    xp, dev = check_array(Z, name, min_ndim=2)
    return xp, dev


def _check_labels(labels, n, xp, name):
    if labels.ndim != 1:
        raise ValueError(
            f"{name} given as integer labels must be 1-dimensional of shape (n_samples,), "
            f"got shape {tuple(labels.shape)}"
        )
    if labels.shape[0] != n:
        raise ValueError(f"{name} has {labels.shape[0]} labels but Z has {n} samples")
    if bool(xp.any(labels < 0)):
        raise ValueError(f"{name} labels must be nonnegative integers")


def _parse_membership(Z, membership, xp, dev):
    """Validate ``membership`` against ``Z``.

    Returns ``(kind, Z, M)`` with kind ``"labels"`` (M the integer labels) or ``"soft"`` (M the
    soft memberships and Z both cast to their common floating dtype).
    """
    get_namespace(Z, membership, names=["Z", "membership"])
    n = Z.shape[-2]
    if xp.isdtype(membership.dtype, "integral"):
        check_array(membership, "membership", floating=False, finite=False, allow_empty=True)
        _check_labels(membership, n, xp, "membership")
        return "labels", Z, membership
    if not xp.isdtype(membership.dtype, "real floating"):
        raise TypeError(
            "membership must hold integer labels or real floating soft memberships, "
            f"got dtype {membership.dtype}"
        )
    if membership.ndim < 2:
        raise ValueError(
            "membership given as floats must be soft memberships of shape (n_samples, "
            f"n_clusters); got shape {tuple(membership.shape)} (pass hard labels as integers)"
        )
    check_array(membership, "membership", min_ndim=2)
    if membership.shape[-2] != n:
        raise ValueError(
            f"membership has {membership.shape[-2]} rows but Z has {n} samples "
            f"(shapes {tuple(membership.shape)} and {tuple(Z.shape)})"
        )
    if membership.ndim > 2 and tuple(membership.shape[:-2]) != tuple(Z.shape[:-2]):
        raise ValueError(
            "membership's leading batch dimensions must match Z's: got shapes "
            f"{tuple(membership.shape)} and {tuple(Z.shape)}"
        )
    if bool(xp.any(membership < 0)):
        raise ValueError("membership must be nonnegative")
    dtype = xp.result_type(Z.dtype, membership.dtype)
    if Z.dtype != dtype:
        Z = xp.astype(Z, dtype)
    if membership.dtype != dtype:
        membership = xp.astype(membership, dtype)
    return "soft", Z, membership


def _one_hot(labels, dtype, xp, dev):
    n_clusters = int(xp.max(labels)) + 1
    classes = xp.arange(n_clusters, dtype=labels.dtype, device=dev)
    return xp.astype(xp.expand_dims(labels, axis=-1) == classes, dtype)


def _check_bases(Z, bases, xp):
    get_namespace(Z, bases, names=["Z", "bases"])
    check_array(bases, "bases", ndim=3)
    if bases.shape[1] != Z.shape[-1]:
        raise ValueError(
            f"bases must have shape (n_subspaces, n_features, subspace_dim) with n_features = "
            f"{Z.shape[-1]} (Z's), got shape {tuple(bases.shape)}"
        )
    dtype = xp.result_type(Z.dtype, bases.dtype)
    if Z.dtype != dtype:
        Z = xp.astype(Z, dtype)
    if bases.dtype != dtype:
        bases = xp.astype(bases, dtype)
    return Z, bases


# --------------------------------------------------------------------------------------------
# numerical building blocks


def _logdet_spd(M, xp):
    """log det of a stack of symmetric positive definite matrices: 2 sum log diag chol(M)."""
    L = xp.linalg.cholesky(M)
    return 2.0 * xp.sum(xp.log(xp.linalg.diagonal(L)), axis=-1)


def _logdet_i_plus_gram(X, c, xp, dev):
    """logdet(I + c X^T X) for X of shape (..., m, q), through the smaller of the q x q and the
    m x m Gram matrices (both have the same determinant)."""
    m, q = X.shape[-2], X.shape[-1]
    if m < q:
        G = X @ xp.matrix_transpose(X)
        size = m
    else:
        G = xp.matrix_transpose(X) @ X
        size = q
    return _logdet_spd(xp.eye(size, dtype=X.dtype, device=dev) + c * G, xp)


def _rate_grad(X, c, xp, dev):
    """c X (I + c X^T X)^{-1} = c (I + c X X^T)^{-1} X, through the smaller system."""
    m, q = X.shape[-2], X.shape[-1]
    if m < q:
        M = xp.eye(m, dtype=X.dtype, device=dev) + c * (X @ xp.matrix_transpose(X))
        return c * xp.linalg.solve(M, X)
    Xt = xp.matrix_transpose(X)
    M = xp.eye(q, dtype=X.dtype, device=dev) + c * (Xt @ X)
    return c * xp.matrix_transpose(xp.linalg.solve(M, Xt))


def _batch_size(shape):
    out = 1
    for s in shape:
        out *= int(s)
    return out


def _soft_compressed(Z, W, eps_sq, xp, dev, *, what):
    r"""Soft compressed rate (``what="rate"``) or its gradient (``"grad_Z"``,
    ``"grad_membership"``) for Z of shape (..., n, d) and W of shape (..., n, K).

    With t_k = sum_i W_ik, v_k = W[:, k] / t_k (0 for an empty cluster) and beta = d / eps_sq,
    cluster k contributes t_k / (2n) logdet M_k, M_k = I_d + beta Z^T diag(v_k) Z. When n < d
    the determinant is taken as det(I_n + beta Z Z^T diag(v_k)) (Sylvester), which has the same
    value. Clusters are processed in chunks whose intermediates hold at most
    ``_MAX_CHUNK_ELEMENTS`` elements.
    """
    n, d = Z.shape[-2], Z.shape[-1]
    n_clusters = W.shape[-1]
    beta = d / eps_sq
    gram_form = n < d
    per_cluster = (n if gram_form else d) * (n + d) * _batch_size(Z.shape[:-2])
    chunk = max(1, _MAX_CHUNK_ELEMENTS // max(per_cluster, 1))

    Wt = xp.matrix_transpose(W)  # (..., K, n)
    t = xp.sum(W, axis=-2)  # (..., K)
    t_safe = xp.where(t > 0, t, xp.ones_like(t))
    V = Wt / xp.expand_dims(t_safe, axis=-1)  # (..., K, n) normalised cluster weights
    Zt = xp.matrix_transpose(Z)
    if what != "grad_Z":
        log1p_sq = xp.log1p(beta * xp.sum(Z * Z, axis=-1))  # (..., n)
    if gram_form:
        G = Z @ Zt  # (..., n, n), shared by all clusters
        eye = xp.eye(n, dtype=Z.dtype, device=dev)
    else:
        eye = xp.eye(d, dtype=Z.dtype, device=dev)

    pieces = []
    total = None
    for k0 in range(0, n_clusters, chunk):
        k1 = min(n_clusters, k0 + chunk)
        Vc = V[..., k0:k1, :]
        tc = t[..., k0:k1]
        if gram_form:
            # A_k = I_n + beta G diag(v_k): similar to an SPD matrix, but not symmetric.
            A = eye + beta * (xp.expand_dims(G, axis=-3) * xp.expand_dims(Vc, axis=-2))
            if what == "rate":
                logdet = xp.linalg.slogdet(A)[1]
            else:
                Y = xp.linalg.solve(A, xp.expand_dims(Z, axis=-3))  # Z M_k^{-1}: (..., kc, n, d)
                if what == "grad_Z":
                    term = xp.sum(xp.expand_dims(Wt[..., k0:k1, :], axis=-1) * Y, axis=-3)
                else:
                    logdet = xp.linalg.slogdet(A)[1]
                    q = xp.sum(Y * xp.expand_dims(Z, axis=-3), axis=-1)  # z_i^T M_k^{-1} z_i
        else:
            Zt_k = xp.expand_dims(Zt, axis=-3)  # (..., 1, d, n)
            M = eye + beta * ((Zt_k * xp.expand_dims(Vc, axis=-2)) @ xp.expand_dims(Z, axis=-3))
            if what != "grad_Z":
                logdet = _logdet_spd(M, xp)  # (..., kc)
            if what != "rate":
                X = xp.linalg.solve(M, Zt_k)  # M_k^{-1} Z^T: (..., kc, d, n)
                if what == "grad_Z":
                    term = xp.matrix_transpose(
                        xp.sum(xp.expand_dims(Wt[..., k0:k1, :], axis=-2) * X, axis=-3)
                    )
                else:
                    q = xp.sum(Zt_k * X, axis=-2)  # z_i^T M_k^{-1} z_i: (..., kc, n)

        if what == "rate":
            # An empty cluster contributes exactly 0. Its term is positively homogeneous in
            # pi_k, so it is written there as the linear function with the one-sided
            # derivative (1/2n) log(1 + beta |z_i|^2): autograd then agrees with
            # compressed_coding_rate_grad(wrt="membership") and never sees 0/0.
            lin = xp.sum(Wt[..., k0:k1, :] * xp.expand_dims(log1p_sq, axis=-2), axis=-1)
            term = xp.sum(xp.where(tc > 0, tc * logdet, lin), axis=-1) / (2 * n)
        if what == "grad_membership":
            # (1/2n)[logdet M_k + beta q_ik - d + tr M_k^{-1}], with
            # tr M_k^{-1} = d - beta sum_j v_jk q_jk.
            s = xp.sum(Vc * q, axis=-1)
            g = (xp.expand_dims(logdet - beta * s, axis=-1) + beta * q) / (2 * n)
            # An empty cluster: the directional derivative of the (positively homogeneous)
            # cluster term when mass moves into it, (1/2n) log(1 + beta |z_i|^2).
            g_empty = xp.expand_dims(log1p_sq, axis=-2) / (2 * n)
            g = xp.where(xp.expand_dims(tc > 0, axis=-1), g, g_empty)
            pieces.append(g)
        else:
            total = term if total is None else total + term

    if what == "rate":
        return total
    if what == "grad_Z":
        return (beta / n) * total
    return xp.matrix_transpose(xp.concat(pieces, axis=-2))


def _labels_compressed(Z, labels, eps_sq, xp, dev):
    """Compressed rate of hard clusters: sum_k n_k/(2n) logdet(I + d/(n_k eps_sq) Z_k^T Z_k),
    each term through the smaller of its two Gram matrices."""
    n, d = Z.shape[-2], Z.shape[-1]
    values = xp.unique_values(labels)
    total = None
    for j in range(values.shape[0]):
        idx = xp.nonzero(labels == values[j])[0]
        m = int(idx.shape[0])
        Zk = xp.take(Z, idx, axis=-2)
        term = (m / (2 * n)) * _logdet_i_plus_gram(Zk, d / (m * eps_sq), xp, dev)
        total = term if total is None else total + term
    return total


def _compressed(Z, membership, eps_sq, xp, dev):
    kind, Z, membership = _parse_membership(Z, membership, xp, dev)
    if kind == "labels":
        return _labels_compressed(Z, membership, eps_sq, xp, dev)
    return _soft_compressed(Z, membership, eps_sq, xp, dev, what="rate")


# --------------------------------------------------------------------------------------------
# public functions


def coding_rate(Z, *, eps_sq=0.5):
    r"""Lossy coding rate of the samples ``Z`` (rows).

    .. math::

        R_\varepsilon(Z) = \tfrac12 \log\det\!\left(I_d + \alpha\, Z^\top Z\right)
                         = \tfrac12 \log\det\!\left(I_n + \alpha\, Z Z^\top\right),
        \qquad \alpha = \frac{d}{n\,\varepsilon^2},

    the number of nats per sample needed to code ``Z`` up to mean squared distortion
    :math:`\varepsilon^2` when it is treated as Gaussian [1]_. The smaller of the two Gram
    matrices is used, and the log-determinant is :math:`2\sum\log\operatorname{diag}` of its
    Cholesky factor.

    Parameters
    ----------
    Z : array of shape (n_samples, n_features) or (..., n_samples, n_features)
        Samples as rows, real floating, finite. Leading dimensions are a batch.
    eps_sq : float, default=0.5
        The squared distortion :math:`\varepsilon^2 > 0` (the official code's ``eps``).

    Returns
    -------
    rate : array of shape () or (...)
        In the namespace, on the device and with the floating dtype of ``Z``.

    Notes
    -----
    For unit-norm rows and :math:`r = \min(n, d)`,
    :math:`\tfrac12\log(1 + d/\varepsilon^2) \le R \le \tfrac r2\log(1 + d/(r\varepsilon^2))`;
    the lower bound is attained by collinear rows and the upper one by an isotropic tight frame.

    References
    ----------
    .. [1] Y. Yu et al., "Learning Diverse and Discriminative Representations via the Principle
       of Maximal Coding Rate Reduction", NeurIPS 2020.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.rate import coding_rate
    >>> round(float(coding_rate(np.eye(2), eps_sq=1.0)), 6)  # ln 2
    0.693147
    """
    xp, dev = _check_Z(Z)
    eps_sq = _check_eps_sq(eps_sq)
    n, d = Z.shape[-2], Z.shape[-1]
    return 0.5 * _logdet_i_plus_gram(Z, d / (n * eps_sq), xp, dev)


def compressed_coding_rate(Z, membership, *, eps_sq=0.5):
    r"""Coding rate of ``Z`` when each cluster is coded separately.

    .. math::

        R^c_\varepsilon(Z \mid \Pi) = \sum_{k=1}^{K} \frac{t_k}{2n}
            \log\det\!\left(I_d + \frac{d}{t_k\,\varepsilon^2}\, Z^\top \operatorname{diag}(\pi_k) Z\right),
        \qquad t_k = \textstyle\sum_i \pi_{k,i},

    with :math:`\pi_k` the ``k``-th membership column [1]_. An empty cluster (:math:`t_k = 0`)
    contributes exactly 0. Hard labels give :math:`\sum_k \frac{n_k}{2n}\log\det(I +
    \frac{d}{n_k\varepsilon^2} Z_k^\top Z_k)`. MLC [2]_ passes its :math:`n\times n` doubly
    stochastic :math:`\Gamma`, whose columns are the (overlapping) clusters.

    Each log-determinant is taken through the cheaper of the :math:`d\times d` matrix above
    and the :math:`n\times n` one :math:`I_n + \frac{d}{t_k\varepsilon^2} Z Z^\top
    \operatorname{diag}(\pi_k)` (same determinant); soft clusters are processed in chunks so
    that memory stays bounded when there are many of them (MLC's :math:`K = n`).

    Parameters
    ----------
    Z : array of shape (n_samples, n_features) or (..., n_samples, n_features)
        Samples as rows, real floating, finite.
    membership : array
        Either integer labels of shape (n_samples,) (nonnegative; cluster ``k`` holds the
        samples labelled ``k``) or nonnegative soft memberships of shape (n_samples,
        n_clusters) (or (..., n_samples, n_clusters) with ``Z``'s batch dimensions) whose
        column ``k`` is :math:`\pi_k`. Rows should sum to one (not checked).
    eps_sq : float, default=0.5
        The squared distortion :math:`\varepsilon^2 > 0`.

    Returns
    -------
    rate : array of shape () or (...)

    References
    ----------
    .. [1] Y. Yu et al., "Learning Diverse and Discriminative Representations via the Principle
       of Maximal Coding Rate Reduction", NeurIPS 2020.
    .. [2] T. Ding et al., "Unsupervised Manifold Linearizing and Clustering", ICCV 2023.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.rate import compressed_coding_rate
    >>> Z = np.eye(2)
    >>> round(float(compressed_coding_rate(Z, np.array([0, 1]), eps_sq=1.0)), 6)  # ln(3) / 2
    0.549306
    >>> round(float(compressed_coding_rate(Z, np.eye(2), eps_sq=1.0)), 6)  # the same, soft
    0.549306
    """
    xp, dev = _check_Z(Z)
    eps_sq = _check_eps_sq(eps_sq)
    return _compressed(Z, membership, eps_sq, xp, dev)


def rate_reduction(
    Z, membership, *, eps_sq=0.5, expansion_weight=1.0, expansion_distortion_scale=1.0
):
    r"""Coding rate reduction, the MCR² objective (to be maximised).

    .. math::

        \Delta R = \gamma_2 \cdot \tfrac12\log\det\!\left(I_d + \gamma_1 \frac{d}{n\varepsilon^2}
            Z^\top Z\right) - R^c_\varepsilon(Z \mid \Pi),

    with :math:`R^c` as in :func:`compressed_coding_rate`. The paper's objective is
    :math:`\gamma_1 = \gamma_2 = 1`; the official MCR² code's ``gam1`` is :math:`\gamma_1`
    (it rescales the distortion inside the expansion term) and ``gam2`` is :math:`\gamma_2`.
    The official loss is :math:`-\Delta R`. For :math:`\gamma_1 = \gamma_2 = 1` and memberships
    whose rows sum to one, :math:`\Delta R \ge 0`, with equality for a single cluster.

    Parameters
    ----------
    Z : array of shape (n_samples, n_features) or (..., n_samples, n_features)
    membership : array
        Integer labels (n_samples,) or soft memberships (n_samples, n_clusters); see
        :func:`compressed_coding_rate`.
    eps_sq : float, default=0.5
        The squared distortion :math:`\varepsilon^2 > 0`.
    expansion_weight : float, default=1.0
        :math:`\gamma_2 \ge 0`, the weight of the expansion term.
    expansion_distortion_scale : float, default=1.0
        :math:`\gamma_1 > 0`, the factor on :math:`\alpha` inside the expansion term.

    Returns
    -------
    delta_r : array of shape () or (...)

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.rate import rate_reduction
    >>> round(float(rate_reduction(np.eye(2), np.array([0, 1]), eps_sq=1.0)), 6)  # ln 2 - ln(3)/2
    0.143841
    """
    xp, dev = _check_Z(Z)
    eps_sq = _check_eps_sq(eps_sq)
    gamma2 = float(check_param("expansion_weight", expansion_weight, "real", low=0.0))
    gamma1 = float(
        check_param(
            "expansion_distortion_scale", expansion_distortion_scale, "real", low=0.0, closed="neither"
        )
    )
    rc = _compressed(Z, membership, eps_sq, xp, dev)
    n, d = Z.shape[-2], Z.shape[-1]
    if Z.dtype != rc.dtype:  # soft memberships of a wider dtype
        Z = xp.astype(Z, rc.dtype)
    r = 0.5 * _logdet_i_plus_gram(Z, gamma1 * d / (n * eps_sq), xp, dev)
    return gamma2 * r - rc


def subspace_compressed_rate(Z, bases, *, eps_sq=0.5):
    r"""Compressed coding rate of tokens against K subspaces (CRATE's :math:`R^c(Z \mid U)`).

    .. math::

        R^c_\varepsilon(Z \mid U_{[K]}) = \sum_{k=1}^K \tfrac12 \log\det\!\left(I_p + \beta\,
            (Z U_k)^\top (Z U_k)\right), \qquad \beta = \frac{p}{N\varepsilon^2},

    i.e. the sum of the coding rates of the projections :math:`Z U_k` of the ``N`` tokens onto
    the ``K`` subspaces (one per attention head) [1]_. Each term uses the smaller of its
    :math:`p\times p` and :math:`N\times N` Gram matrices. The bases are usually orthonormal
    (:math:`U_k^\top U_k = I_p`); this is not required.

    Parameters
    ----------
    Z : array of shape (n_tokens, n_features) or (..., n_tokens, n_features)
        Tokens as rows; leading dimensions (images, say) are a batch.
    bases : array of shape (n_subspaces, n_features, subspace_dim)
        ``bases[k]`` is :math:`U_k \in \mathbb R^{d\times p}`.
    eps_sq : float, default=0.5
        The squared distortion :math:`\varepsilon^2 > 0`. (CRATE's layer-wise diagnostic uses
        0.01 on per-head L2-normalised tokens.)

    Returns
    -------
    rate : array of shape () or (...)

    References
    ----------
    .. [1] Y. Yu et al., "White-Box Transformers via Sparse Rate Reduction", NeurIPS 2023.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.rate import subspace_compressed_rate
    >>> U = np.eye(2)[:, :, None]  # U_1 = e_1, U_2 = e_2 (p = 1)
    >>> round(float(subspace_compressed_rate(np.eye(2), U, eps_sq=1.0)), 6)  # ln 1.5
    0.405465
    """
    xp, dev = _check_Z(Z)
    eps_sq = _check_eps_sq(eps_sq)
    Z, bases = _check_bases(Z, bases, xp)
    N, p = Z.shape[-2], bases.shape[-1]
    ZU = xp.expand_dims(Z, axis=-3) @ bases  # (..., K, N, p)
    return 0.5 * xp.sum(_logdet_i_plus_gram(ZU, p / (N * eps_sq), xp, dev), axis=-1)


def sparse_rate_reduction(Z, bases, *, eps_sq=0.5, lam=0.1):
    r"""Sparse rate reduction, the objective unrolled by CRATE (to be maximised).

    .. math::

        R_\varepsilon(Z) - R^c_\varepsilon(Z \mid U_{[K]}) - \lambda \lVert Z\rVert_1,

    with :math:`R` from :func:`coding_rate` (:math:`\alpha = d/(N\varepsilon^2)`),
    :math:`R^c` from :func:`subspace_compressed_rate`, and the :math:`\ell_0` penalty of the
    paper relaxed to :math:`\ell_1` as in practice [1]_.

    **ℓ₁ convention:** :math:`\lVert Z\rVert_1 = \sum_{i,j} |Z_{ij}|` is the entrywise sum
    over all ``N`` tokens and ``d`` features of each batch element (not a mean). For a
    per-token penalty pass ``lam / N``.

    Parameters
    ----------
    Z : array of shape (n_tokens, n_features) or (..., n_tokens, n_features)
    bases : array of shape (n_subspaces, n_features, subspace_dim)
    eps_sq : float, default=0.5
        The squared distortion :math:`\varepsilon^2 > 0`.
    lam : float, default=0.1
        Sparsity weight :math:`\lambda \ge 0` (CRATE's code hard-codes 0.1).

    Returns
    -------
    objective : array of shape () or (...)

    References
    ----------
    .. [1] Y. Yu et al., "White-Box Transformers via Sparse Rate Reduction", NeurIPS 2023.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.rate import sparse_rate_reduction
    >>> U = np.eye(2)[:, :, None]
    >>> round(float(sparse_rate_reduction(np.eye(2), U, eps_sq=1.0, lam=0.1)), 6)  # ln(4/3) - 0.2
    0.087682
    """
    xp, dev = _check_Z(Z)
    eps_sq = _check_eps_sq(eps_sq)
    lam = float(check_param("lam", lam, "real", low=0.0))
    Z, bases = _check_bases(Z, bases, xp)
    N, d = Z.shape[-2], Z.shape[-1]
    r = 0.5 * _logdet_i_plus_gram(Z, d / (N * eps_sq), xp, dev)
    rc = subspace_compressed_rate(Z, bases, eps_sq=eps_sq)
    return r - rc - lam * xp.sum(xp.abs(Z), axis=(-2, -1))


def coding_length(Z, labels, *, eps_sq=0.1):
    r"""Total coding length (nats) of ``Z`` segmented by ``labels``: clustering by compression.

    .. math::

        L(Z \mid \text{labels}) = \sum_k \left[\frac{m_k + d}{2}\log\det\!\left(I_d +
            \frac{d}{\varepsilon^2 m_k} Z_k^\top Z_k\right) - m_k \log\frac{m_k}{m}\right],

    where :math:`Z_k` holds the :math:`m_k` rows of cluster ``k`` and :math:`m` is the number
    of samples: the bits to code each cluster as a zero-mean Gaussian up to distortion
    :math:`\varepsilon^2`, plus the bits to code the memberships [1]_. Among candidate
    segmentations (for instance spectral clusterings for several K, as in MLC/CPP's
    ``optimalcluster.py``), the one with the smallest coding length is preferred. Labels that do
    not occur contribute nothing.

    Parameters
    ----------
    Z : array of shape (n_samples, n_features) or (..., n_samples, n_features)
    labels : integer array of shape (n_samples,)
        Nonnegative cluster labels.
    eps_sq : float, default=0.1
        The squared distortion :math:`\varepsilon^2 > 0` (0.1 in the MLC/CPP code).

    Returns
    -------
    length : array of shape () or (...)

    References
    ----------
    .. [1] Y. Ma, H. Derksen, W. Hong, J. Wright, "Segmentation of Multivariate Mixed Data via
       Lossy Data Coding and Compression", IEEE TPAMI 29(9), 2007.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.rate import coding_length
    >>> Z = np.repeat(np.eye(2), 10, axis=0)  # 10 samples on each axis
    >>> for labels in ([0] * 20, [0] * 10 + [1] * 10, [0] * 5 + [1] * 5 + [2] * 5 + [3] * 5):
    ...     print(round(float(coding_length(Z, np.array(labels))), 2))
    52.75
    50.4
    70.35
    """
    xp, dev = _check_Z(Z)
    eps_sq = _check_eps_sq(eps_sq)
    get_namespace(Z, labels, names=["Z", "labels"])
    if not xp.isdtype(labels.dtype, "integral"):
        raise TypeError(f"labels must have an integer dtype, got {labels.dtype}")
    _check_labels(labels, Z.shape[-2], xp, "labels")
    m, d = Z.shape[-2], Z.shape[-1]
    values = xp.unique_values(labels)
    total = None
    for j in range(values.shape[0]):
        idx = xp.nonzero(labels == values[j])[0]
        mk = int(idx.shape[0])
        Zk = xp.take(Z, idx, axis=-2)
        term = ((mk + d) / 2) * _logdet_i_plus_gram(Zk, d / (eps_sq * mk), xp, dev)
        term = term - mk * math.log(mk / m)
        total = term if total is None else total + term
    return total


# --------------------------------------------------------------------------------------------
# analytic gradients


def coding_rate_grad(Z, *, eps_sq=0.5):
    r"""Gradient of :func:`coding_rate` with respect to ``Z``.

    .. math::

        \frac{\partial R_\varepsilon}{\partial Z} = \alpha\, Z\left(I_d + \alpha Z^\top Z\right)^{-1}
            = \alpha \left(I_n + \alpha Z Z^\top\right)^{-1} Z,
        \qquad \alpha = \frac{d}{n\varepsilon^2}

    (row form of ReduNet's expansion operator), through the smaller linear system.

    Parameters
    ----------
    Z : array of shape (n_samples, n_features) or (..., n_samples, n_features)
    eps_sq : float, default=0.5
        The squared distortion :math:`\varepsilon^2 > 0`.

    Returns
    -------
    grad : array of the shape of ``Z``

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.rate import coding_rate_grad
    >>> coding_rate_grad(np.eye(2), eps_sq=1.0)  # I (I + I)^{-1}
    array([[0.5, 0. ],
           [0. , 0.5]])
    """
    xp, dev = _check_Z(Z)
    eps_sq = _check_eps_sq(eps_sq)
    n, d = Z.shape[-2], Z.shape[-1]
    return _rate_grad(Z, d / (n * eps_sq), xp, dev)


def compressed_coding_rate_grad(Z, membership, *, eps_sq=0.5, wrt="Z"):
    r"""Gradient of :func:`compressed_coding_rate` with respect to ``Z`` or the memberships.

    With :math:`M_k = I_d + \frac{d}{t_k\varepsilon^2} Z^\top\operatorname{diag}(\pi_k) Z`,
    :math:`\alpha = \frac{d}{n\varepsilon^2}` and :math:`\beta = \frac{d}{\varepsilon^2}`:

    .. math::

        \frac{\partial R^c}{\partial Z} = \alpha \sum_k \operatorname{diag}(\pi_k)\, Z M_k^{-1},
        \qquad
        \frac{\partial R^c}{\partial \pi_{k,i}} = \frac{1}{2n}\left[\log\det M_k
            + \beta\, z_i^\top M_k^{-1} z_i - d + \operatorname{tr} M_k^{-1}\right].

    The membership gradient is the full one, in which the cluster mass :math:`t_k` varies with
    :math:`\pi_{k,i}`; if the masses are held fixed (MLC's doubly stochastic :math:`\Gamma`)
    only :math:`\frac{\beta}{2n} z_i^\top M_k^{-1} z_i` remains. Each cluster term is positively
    homogeneous in :math:`\pi_k`, hence not differentiable at an empty cluster; there the
    returned entry is the one-sided derivative in the direction of sample ``i``,
    :math:`\frac{1}{2n}\log(1 + \beta\lVert z_i\rVert^2)` (the cost of moving a little mass of
    sample ``i`` into the empty cluster); torch autograd of :func:`compressed_coding_rate`
    returns the same value. Integer labels are treated as the one-hot matrix with
    ``max(labels) + 1`` columns.

    Parameters
    ----------
    Z : array of shape (n_samples, n_features) or (..., n_samples, n_features)
    membership : array
        Integer labels (n_samples,) or soft memberships (n_samples, n_clusters); see
        :func:`compressed_coding_rate`.
    eps_sq : float, default=0.5
        The squared distortion :math:`\varepsilon^2 > 0`.
    wrt : {"Z", "membership"}, default="Z"
        The argument to differentiate with respect to.

    Returns
    -------
    grad : array
        Of the shape of ``Z`` for ``wrt="Z"``, of shape (..., n_samples, n_clusters) for
        ``wrt="membership"``.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.rate import compressed_coding_rate_grad
    >>> compressed_coding_rate_grad(np.eye(2), np.array([0, 1]), eps_sq=1.0)  # e_i e_i^T/3
    array([[0.33333333, 0.        ],
           [0.        , 0.33333333]])
    """
    xp, dev = _check_Z(Z)
    eps_sq = _check_eps_sq(eps_sq)
    check_param("wrt", wrt, "option", options=("Z", "membership"))
    kind, Z, W = _parse_membership(Z, membership, xp, dev)
    if kind == "labels":
        W = _one_hot(W, Z.dtype, xp, dev)
    what = "grad_Z" if wrt == "Z" else "grad_membership"
    return _soft_compressed(Z, W, eps_sq, xp, dev, what=what)


def rate_reduction_grad(
    Z, membership, *, eps_sq=0.5, expansion_weight=1.0, expansion_distortion_scale=1.0, wrt="Z"
):
    r"""Gradient of :func:`rate_reduction` with respect to ``Z`` or the memberships.

    .. math::

        \frac{\partial \Delta R}{\partial Z} = \gamma_2\gamma_1\alpha\, Z
            \left(I_d + \gamma_1\alpha Z^\top Z\right)^{-1} - \frac{\partial R^c}{\partial Z},
        \qquad
        \frac{\partial \Delta R}{\partial \Pi} = -\frac{\partial R^c}{\partial \Pi},

    with the terms of :func:`compressed_coding_rate_grad`.

    Parameters
    ----------
    Z, membership, eps_sq, expansion_weight, expansion_distortion_scale
        As in :func:`rate_reduction`.
    wrt : {"Z", "membership"}, default="Z"

    Returns
    -------
    grad : array
        Of the shape of ``Z`` or of the (one-hot) memberships.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.rate import rate_reduction_grad
    >>> rate_reduction_grad(np.eye(2), np.array([0, 1]), eps_sq=1.0)  # 1/2 - 1/3
    array([[0.16666667, 0.        ],
           [0.        , 0.16666667]])
    """
    xp, dev = _check_Z(Z)
    eps_sq = _check_eps_sq(eps_sq)
    gamma2 = float(check_param("expansion_weight", expansion_weight, "real", low=0.0))
    gamma1 = float(
        check_param(
            "expansion_distortion_scale", expansion_distortion_scale, "real", low=0.0, closed="neither"
        )
    )
    g_c = compressed_coding_rate_grad(Z, membership, eps_sq=eps_sq, wrt=wrt)
    if wrt == "membership":
        return -g_c
    n, d = Z.shape[-2], Z.shape[-1]
    if Z.dtype != g_c.dtype:
        Z = xp.astype(Z, g_c.dtype)
    g_r = _rate_grad(Z, gamma1 * d / (n * eps_sq), xp, dev)
    return gamma2 * g_r - g_c


def subspace_compressed_rate_grad(Z, bases, *, eps_sq=0.5):
    r"""Gradient of :func:`subspace_compressed_rate` with respect to ``Z``.

    .. math::

        \nabla_Z R^c(Z \mid U_{[K]}) = \beta \sum_k Z U_k \left(I_p + \beta (ZU_k)^\top (ZU_k)\right)^{-1}
            U_k^\top, \qquad \beta = \frac{p}{N\varepsilon^2}

    (row form of CRATE's compression gradient; its first-order Neumann approximation with
    :math:`\sum_k U_k U_k^\top = I` is what the MSSA block replaces by self-attention).

    Parameters
    ----------
    Z : array of shape (n_tokens, n_features) or (..., n_tokens, n_features)
    bases : array of shape (n_subspaces, n_features, subspace_dim)
    eps_sq : float, default=0.5
        The squared distortion :math:`\varepsilon^2 > 0`.

    Returns
    -------
    grad : array of the shape of ``Z``

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.rate import subspace_compressed_rate_grad
    >>> U = np.eye(2)[:, :, None]
    >>> subspace_compressed_rate_grad(np.eye(2), U, eps_sq=1.0)  # (1/2) / (1 + 1/2) on e_k
    array([[0.33333333, 0.        ],
           [0.        , 0.33333333]])
    """
    xp, dev = _check_Z(Z)
    eps_sq = _check_eps_sq(eps_sq)
    Z, bases = _check_bases(Z, bases, xp)
    N, p = Z.shape[-2], bases.shape[-1]
    ZU = xp.expand_dims(Z, axis=-3) @ bases  # (..., K, N, p)
    g = _rate_grad(ZU, p / (N * eps_sq), xp, dev) @ xp.matrix_transpose(bases)
    return xp.sum(g, axis=-3)
