"""Per-group ridge least squares over a CSR pattern: the inner loop of alternating minimisation."""

from __future__ import annotations

from .._backend import get_namespace, is_array_api_obj
from .._validation import check_param
from ._bucketed import bucket_layout
from ._dispatch import from_cuda, from_host, select_backend, to_cuda, to_host

__all__ = ["masked_normal_eq", "default_jitter"]

METHODS = ("exact", "cg", "sketch")


def default_jitter(dtype_name):
    """Relative diagonal jitter: 1e3 machine epsilons in float64 (2.2e-13), 10 in float32 (1.2e-6).

    Examples
    --------
    >>> from subspacelab.kernels.masked_normal_eq import default_jitter
    >>> float(default_jitter("float64")) < float(default_jitter("float32"))
    True
    """
    return 2.220446049250313e-13 if dtype_name == "float64" else 1.1920929e-06


def masked_normal_eq(
    indptr,
    indices,
    data,
    factors,
    ridge=0.0,
    *,
    method="exact",
    x0=None,
    n_steps=None,
    tol=1e-10,
    sketch_size=None,
    seed=0,
    backend="auto",
    layout=None,
    check_input=True,
):
    r"""Solve one small ridge least-squares problem per group of a CSR pattern.

    Group :math:`g` (row :math:`g` of the CSR matrix ``(data, indices, indptr)``) observes
    targets :math:`y_p` at feature rows :math:`f_{j_p} = F[j_p, :]` for
    :math:`p \in [\mathrm{indptr}_g, \mathrm{indptr}_{g+1})`. With :math:`A_g` the stacked
    feature rows, the solution row :math:`x_g \in \mathbb{R}^k` is

    .. math::

        x_g = \arg\min_x \|A_g x - y_g\|_2^2 + \lambda \|x\|_2^2
            = (A_g^\top A_g + \lambda I)^{-1} A_g^\top y_g .

    This is one half-step of alternating minimisation for matrix completion (the U-step with
    ``F = V`` over the CSR pattern of the observed entries, the V-step with ``F = U`` over the
    CSC pattern).

    Three methods:

    ``"exact"``
        Accumulate :math:`G_g = A_g^\top A_g + \lambda I` and :math:`b_g = A_g^\top y_g`
        (:math:`|\Omega_g| k^2/2` flops), then a Cholesky solve (:math:`k^3/3`). Total
        :math:`O(|\Omega| k^2 + n k^3)`.
    ``"cg"``
        At most ``n_steps`` conjugate-gradient steps on the normal equations, started from
        ``x0`` (warm start) or zero; each step costs :math:`O(|\Omega_g| k)` because
        :math:`G_g v = A_g^\top (A_g v) + \lambda v` is never formed. Stops early when
        :math:`\|A_g^\top (y_g - A_g x) - \lambda x\| \le \mathrm{tol}\,\|A_g^\top y_g\|`.
    ``"sketch"``
        The sketch-and-precondition solver of Gu, Song, Yin and Zhang (arXiv 2302.11068):
        CountSketch :math:`S_g` with ``s = sketch_size`` rows (default :math:`4k`), triangular
        factor :math:`R` with :math:`R^\top R = (S_g A_g)^\top S_g A_g + \lambda I`, start at the
        sketch-and-solve point (or ``x0``), then conjugate gradients on the full normal
        equations preconditioned by :math:`(R^\top R)^{-1}` until the relative residual is
        below ``tol`` or ``n_steps`` steps. :math:`R` is computed as the Cholesky factor of the
        sketched Gram matrix, which equals the R of the QR factorisation of
        :math:`[S_g A_g; \sqrt{\lambda} I]` up to row signs. Groups with at most ``s``
        observations are solved exactly (a sketch cannot be smaller than the matrix). Which
        sketch the paper itself uses is unverified; the bound holds for CountSketch, SRHT
        and OSNAP.

    A relative jitter :math:`\delta = c\,(\mathrm{tr}(A_g^\top A_g)/k + \lambda)`, with
    :math:`c = 10^3\epsilon` in float64 and :math:`10\epsilon` in float32, is
    added to the diagonal before factorising, so that a group with fewer than k observations
    and no ridge gets a finite (nearly minimum-norm) answer and an empty group gets zero.

    Parameters
    ----------
    indptr : int array, shape (n_groups + 1,)
    indices : int array, shape (nnz,)
        Feature row of each observation, in ``[0, factors.shape[0])``.
    data : float array, shape (nnz,)
        Targets.
    factors : float array, shape (n_features, k)
        Fixed factor F. The result has its dtype.
    ridge : float or float array of shape (n_groups,), default 0.0
        :math:`\lambda \ge 0`, one value for all groups or one per group (ALS-WR scales it
        by the group's observation count).
    method : {"exact", "cg", "sketch"}
    x0 : float array, shape (n_groups, k), optional
        Warm start for ``"cg"`` and ``"sketch"`` (ignored by ``"exact"``).
    n_steps : int, optional
        Maximum inner steps (default 3 for ``"cg"``, 20 for ``"sketch"``).
    tol : float, default 1e-10
        Relative residual at which the inner iterations stop.
    sketch_size : int, optional
        Rows of the CountSketch (default ``4 k``).
    seed : int, default 0
        Seed of the counter-based sketch hash (``sketch_hash(seed, group, column)``).
    backend : {"auto", "generic", "numba", "cuda"}
    layout : BucketLayout, optional
        Precomputed padded layout for the generic path (see :mod:`._bucketed`); built when
        absent. Pass ``split_at=sketch_size`` when building it for ``"sketch"``.
    check_input : bool, default True
        Validate shapes, dtypes and index ranges (an O(nnz) pass).

    Returns
    -------
    array, shape (n_groups, k)
        The solutions, in the namespace and on the device of ``factors``.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.kernels import masked_normal_eq
    >>> F = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> indptr = np.array([0, 3, 5]); indices = np.array([0, 1, 2, 0, 2])
    >>> data = np.array([1.0, 2.0, 3.0, 1.0, 1.0])
    >>> np.round(masked_normal_eq(indptr, indices, data, F), 6)
    array([[1., 2.],
           [1., 0.]])
    """
    xp, dev = get_namespace(indptr, indices, data, factors, x0, names=["indptr", "indices", "data", "factors", "x0"])
    check_param("method", method, "option", options=METHODS)
    ridge_arr = None
    if not is_array_api_obj(ridge):
        check_param("ridge", ridge, "real", low=0.0)
        ridge = float(ridge)
    else:
        ridge_arr = ridge
        if get_namespace(ridge, factors, names=["ridge", "factors"])[0] is not xp or ridge.ndim != 1 or ridge.shape[0] != indptr.shape[0] - 1:
            raise ValueError(f"ridge must be a non-negative float or an array of shape ({indptr.shape[0] - 1},) in the namespace of factors")
        if check_input and not bool(xp.all(ridge >= 0)):
            raise ValueError("ridge must be non-negative")
    check_param("n_steps", n_steps, "int", low=0, allow_none=True)
    check_param("tol", tol, "real", low=0.0)
    check_param("sketch_size", sketch_size, "int", low=1, allow_none=True)
    check_param("seed", seed, "int", low=0)
    if check_input:
        _check_pattern(indptr, indices, data, factors, x0, xp)
    k = factors.shape[1]
    if n_steps is None:
        n_steps = 3 if method == "cg" else 20
    s = int(sketch_size) if sketch_size is not None else 4 * k
    dtype_name = "float32" if factors.dtype == xp.float32 else "float64"
    jitter_rel = default_jitter(dtype_name)
    impl = select_backend(factors, backend)
    if impl == "generic":
        if layout is None:
            layout = bucket_layout(indptr, indices, xp, dev, split_at=s if method == "sketch" else None)
        return _generic(layout, data, factors, ridge, method, x0, int(n_steps), float(tol), s, int(seed), jitter_rel, xp)
    if impl == "numba":
        from ._masked_normal_eq_numba import masked_normal_eq_numba

        ip, ix, d, F, x0h, rh = to_host(indptr, indices, data, factors, x0, ridge_arr)
        out, _ = masked_normal_eq_numba(ip, ix, d, F, ridge if rh is None else rh, method, x0h, int(n_steps), tol, s, int(seed), jitter_rel)
        return from_host(out, xp, dev)
    from ._masked_normal_eq_cuda import masked_normal_eq_cuda

    rd = None if ridge_arr is None else xp.astype(ridge_arr, factors.dtype)
    ip, ix, d, F, x0d, rd = to_cuda(indptr, indices, xp.astype(data, factors.dtype), factors, x0, rd)
    out, _ = masked_normal_eq_cuda(ip, ix, d, F, ridge if rd is None else rd, method, x0d, int(n_steps), tol, s, int(seed), jitter_rel)
    return from_cuda(out, factors, xp, dev)


def _check_pattern(indptr, indices, data, factors, x0, xp):
    if indptr.ndim != 1 or indices.ndim != 1 or data.ndim != 1:
        raise ValueError(
            f"indptr, indices and data must be 1-dimensional, got shapes {tuple(indptr.shape)}, "
            f"{tuple(indices.shape)}, {tuple(data.shape)}"
        )
    for name, a in (("indptr", indptr), ("indices", indices)):
        if not xp.isdtype(a.dtype, "integral"):
            raise TypeError(f"{name} must have an integer dtype, got {a.dtype}")
    if factors.ndim != 2 or not xp.isdtype(factors.dtype, "real floating"):
        raise TypeError(f"factors must be a 2-D real floating array, got shape {tuple(factors.shape)} dtype {factors.dtype}")
    if not xp.isdtype(data.dtype, "real floating"):
        raise TypeError(f"data must have a real floating dtype, got {data.dtype}")
    nnz = indices.shape[0]
    if data.shape[0] != nnz:
        raise ValueError(f"indices and data must have the same length, got {nnz} and {data.shape[0]}")
    if indptr.shape[0] < 1 or int(indptr[0]) != 0 or int(indptr[-1]) != nnz:
        raise ValueError(f"indptr must start at 0 and end at len(indices) = {nnz}")
    if indptr.shape[0] > 1 and bool(xp.any(indptr[1:] < indptr[:-1])):
        raise ValueError("indptr must be non-decreasing")
    if nnz and (bool(xp.any(indices < 0)) or bool(xp.any(indices >= factors.shape[0]))):
        raise ValueError(f"indices must lie in [0, {factors.shape[0]}) (the rows of factors)")
    if not bool(xp.all(xp.isfinite(data))) or not bool(xp.all(xp.isfinite(factors))):
        raise ValueError("data and factors must be finite (no NaN or infinity)")
    if x0 is not None and tuple(x0.shape) != (indptr.shape[0] - 1, factors.shape[1]):
        raise ValueError(f"x0 must have shape {(indptr.shape[0] - 1, factors.shape[1])}, got {tuple(x0.shape)}")


def _mv(A, v):
    """Batched matrix-vector product (B, n, k) @ (B, k) -> (B, n)."""
    return (A @ v[..., None])[..., 0]


def _mtv(A, v):
    """Batched A^T v: (B, n, k), (B, n) -> (B, k)."""
    return (v[:, None, :] @ A)[:, 0, :]


def _generic(layout, data, F, ridge, method, x0, n_steps, tol, s, seed, jitter_rel, xp):
    """Array-API reference: per chunk of the padded layout, batched Gram/solve or batched CG."""
    import array_api_compat

    k = F.shape[1]
    dev = array_api_compat.device(F)
    eye = xp.eye(k, dtype=F.dtype, device=dev)
    data = xp.astype(data, F.dtype)
    results = []
    for ch in layout.chunks:
        B, D = ch.size, ch.width
        m = xp.astype(ch.mask, F.dtype)
        A = xp.reshape(xp.take(F, ch.cols, axis=0), (B, D, k)) * m[..., None]
        y = (xp.reshape(xp.take(data, ch.pos), (B, D)) if layout.n_obs else xp.zeros((B, D), dtype=F.dtype, device=dev)) * m
        lam = xp.take(xp.astype(ridge, F.dtype), ch.groups) if hasattr(ridge, "shape") else xp.full((B,), ridge, dtype=F.dtype, device=dev)
        if method == "exact" or (method == "sketch" and int(ch.degrees.max(initial=0)) <= s):
            results.append(_exact_batch(A, y, lam, jitter_rel, eye, xp))
            continue
        x = xp.take(x0, ch.groups, axis=0) if x0 is not None else xp.zeros((B, k), dtype=F.dtype, device=dev)
        if method == "cg":
            results.append(_pcg_batch(A, y, lam, x, None, n_steps, tol, xp))
            continue
        SA, Sb = _countsketch_batch(A, y, ch.groups, ch.cols, ch.mask, s, seed, xp)
        Gs = xp.matrix_transpose(SA) @ SA
        tr = xp.sum(xp.linalg.diagonal(Gs), axis=-1)
        delta = _jitter(tr, k, lam, jitter_rel, xp)
        Gs = Gs + (lam + delta)[:, None, None] * eye
        if x0 is None:
            x = xp.linalg.solve(Gs, _mtv(SA, Sb)[..., None])[..., 0]
        results.append(_pcg_batch(A, y, lam, x, xp.linalg.inv(Gs), n_steps, tol, xp))
    if not results:
        return xp.zeros((0, k), dtype=F.dtype, device=dev)
    return xp.take(xp.concat(results, axis=0), layout.inverse, axis=0)


def _jitter(tr, k, ridge, jitter_rel, xp):
    d = jitter_rel * (tr / k + ridge)
    return xp.where(d > 0, d, xp.full_like(d, 1e-300 if d.dtype == xp.float64 else 1e-38))


def _exact_batch(A, y, ridge, jitter_rel, eye, xp):
    k = A.shape[-1]
    G = xp.matrix_transpose(A) @ A
    tr = xp.sum(xp.linalg.diagonal(G), axis=-1)
    delta = _jitter(tr, k, ridge, jitter_rel, xp)
    G = G + (ridge + delta)[:, None, None] * eye
    return xp.linalg.solve(G, _mtv(A, y)[..., None])[..., 0]


def _pcg_batch(A, y, ridge, x, Minv, n_steps, tol, xp):
    """Batched (preconditioned) CG with per-group stopping identical to the Numba loop."""

    def precond(r):
        return r if Minv is None else _mv(Minv, r)

    b = _mtv(A, y)
    bnorm = xp.sqrt(xp.sum(b * b, axis=-1))
    ridge = ridge[:, None]
    r = b - _mtv(A, _mv(A, x)) - ridge * x
    z = precond(r)
    p = z
    rz = xp.sum(r * z, axis=-1)
    rr = xp.sum(r * r, axis=-1)
    done = xp.zeros(rz.shape, dtype=xp.bool, device=_device(x))
    one = xp.ones_like(rz)
    for _ in range(n_steps):
        done = done | (xp.sqrt(rr) <= tol * bnorm) | (rz <= 0)
        if bool(xp.all(done)):
            break
        q = _mtv(A, _mv(A, p)) + ridge * p
        pq = xp.sum(p * q, axis=-1)
        done = done | (pq <= 0)
        alpha = xp.where(done, xp.zeros_like(rz), rz / xp.where(pq > 0, pq, one))
        x = x + alpha[:, None] * p
        r = r - alpha[:, None] * q
        rr = xp.where(done, rr, xp.sum(r * r, axis=-1))
        z = precond(r)
        rz_new = xp.sum(r * z, axis=-1)
        beta = xp.where(done, xp.zeros_like(rz), rz_new / xp.where(rz > 0, rz, one))
        p = xp.where(done[:, None], p, z + beta[:, None] * p)
        rz = xp.where(done, rz, rz_new)
    return x


def _device(x):
    import array_api_compat

    return array_api_compat.device(x)


def _countsketch_batch(A, y, groups, cols, mask, s, seed, xp):
    """CountSketch of a padded chunk as a dense one-hot product (documented O(s D k) cost)."""
    from .sketch import hash_buckets

    B, D, k = A.shape
    bucket, sign = hash_buckets(seed, groups, cols, s, xp)
    bucket = xp.reshape(bucket, (B, D))
    sign = xp.reshape(xp.astype(sign, A.dtype), (B, D)) * xp.astype(mask, A.dtype)
    ar = xp.arange(s, device=_device(A))
    S = xp.astype(bucket[:, None, :] == ar[None, :, None], A.dtype) * sign[:, None, :]
    return S @ A, _mv(S, y)

