"""CountSketch of every group of a CSR pattern (the sketch of the sketch-and-precondition solver)."""

from __future__ import annotations

from .._backend import get_namespace
from .._validation import check_param
from ._bucketed import bucket_layout
from ._dispatch import from_cuda, from_host, select_backend, to_cuda, to_host

__all__ = ["countsketch", "hash_buckets"]

_MASK32 = 0xFFFFFFFF
_MULT = 0x45D9F3B


def _hash32(x):
    x = x & _MASK32
    x = (((x >> 16) ^ x) * _MULT) & _MASK32
    x = (((x >> 16) ^ x) * _MULT) & _MASK32
    return (x >> 16) ^ x


def hash_buckets(seed, groups, cols, sketch_size, xp):
    """Bucket and sign of each (group, column) pair, computed in ``xp`` with int64 arithmetic.

    ``groups`` has shape (B,) and ``cols`` shape (B * D,) (D columns per group, row-major).
    ``h = hash32(hash32(hash32(seed) ^ group) ^ column)`` with a 32-bit xorshift-multiply
    mixer whose products stay below 2**59, so int64 never overflows on any backend; the bucket
    is ``h mod s`` and the sign ``1 - 2 * bit31(h)``. The Numba and CUDA kernels evaluate the
    same formula (``_rowsolve_core.sketch_hash``).

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.kernels.sketch import hash_buckets
    >>> bucket, sign = hash_buckets(0, np.array([0, 1]), np.array([0, 1, 2, 0, 1, 2]), 4, np)
    >>> bucket.shape, bool(((bucket >= 0) & (bucket < 4)).all()), sorted(set(sign.tolist())) in ([-1], [1], [-1, 1])
    ((6,), True, True)
    """
    B = groups.shape[0]
    D = cols.shape[0] // B if B else 0
    g = xp.reshape(xp.broadcast_to(xp.astype(groups, xp.int64)[:, None], (B, D)), (-1,))
    h = _hash32(_hash32(_hash32(int(seed)) ^ (g & _MASK32)) ^ (xp.astype(cols, xp.int64) & _MASK32))
    return h % sketch_size, 1 - 2 * ((h >> 31) & 1)


def countsketch(indptr, indices, data, factors, sketch_size, *, seed=0, backend="auto", layout=None):
    r"""Apply a CountSketch to each group's least-squares problem.

    For group :math:`g` with stacked feature rows :math:`A_g = F[\mathrm{indices}_g, :]` and
    targets :math:`y_g`, returns :math:`S_g A_g` and :math:`S_g y_g` where
    :math:`S_g \in \{0, \pm 1\}^{s \times |\Omega_g|}` has one nonzero per column: observation
    :math:`p` (feature row :math:`j`) lands in bucket :math:`h(g, j) \bmod s` with sign
    :math:`\pm 1`, :math:`h` a counter-based hash of ``(seed, g, j)``. Hence

    .. math::

        (S_g A_g)_{t,:} = \sum_{p:\ h_p \bmod s = t} \sigma_p\, F[j_p, :],

    computed in :math:`O(|\Omega_g| k)` by the Numba and CUDA kernels. The generic array-API
    path has no scatter-add, so it forms :math:`S_g` as a dense one-hot block of the padded
    layout and multiplies, :math:`O(s\,|\Omega_g|\,k)`: the same numbers, slower.
    With :math:`s = O(k^2)` CountSketch is an oblivious subspace embedding with constant
    distortion (Clarkson-Woodruff); smaller :math:`s` (such as :math:`4k`) is what the
    preconditioner uses in practice.

    Parameters
    ----------
    indptr, indices : int arrays
        CSR pattern (groups are rows).
    data : float array, shape (nnz,)
    factors : float array, shape (n_features, k)
    sketch_size : int
        Number of buckets :math:`s \ge 1`.
    seed : int, default 0
    backend : {"auto", "generic", "numba", "cuda"}
    layout : BucketLayout, optional
        Padded layout for the generic path.

    Returns
    -------
    SA : array, shape (n_groups, s, k)
    Sb : array, shape (n_groups, s)

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.kernels import countsketch
    >>> F = np.eye(3); indptr = np.array([0, 3]); indices = np.array([0, 1, 2])
    >>> SA, Sb = countsketch(indptr, indices, np.ones(3), F, 2)
    >>> SA.shape, bool(np.all(np.abs(SA).sum(axis=1) == 1))
    ((1, 2, 3), True)
    """
    xp, dev = get_namespace(indptr, indices, data, factors, names=["indptr", "indices", "data", "factors"])
    check_param("sketch_size", sketch_size, "int", low=1)
    check_param("seed", seed, "int", low=0)
    from .masked_normal_eq import _check_pattern

    _check_pattern(indptr, indices, data, factors, None, xp)
    s = int(sketch_size)
    impl = select_backend(factors, backend)
    if impl == "generic":
        if layout is None:
            layout = bucket_layout(indptr, indices, xp, dev)
        return _generic(layout, data, factors, s, int(seed), xp)
    if impl == "numba":
        from ._sketch_numba import countsketch_numba

        ip, ix, d, F = to_host(indptr, indices, data, factors)
        return from_host(countsketch_numba(ip, ix, d.astype(F.dtype, copy=False), F, s, int(seed)), xp, dev)
    from ._sketch_cuda import countsketch_cuda

    ip, ix, d, F = to_cuda(indptr, indices, xp.astype(data, factors.dtype), factors)
    return from_cuda(countsketch_cuda(ip, ix, d, F, s, int(seed)), factors, xp, dev)


def _generic(layout, data, F, s, seed, xp):
    import array_api_compat

    from .masked_normal_eq import _countsketch_batch

    k = F.shape[1]
    dev = array_api_compat.device(F)
    data = xp.astype(data, F.dtype)
    SAs, Sbs = [], []
    for ch in layout.chunks:
        B, D = ch.size, ch.width
        m = xp.astype(ch.mask, F.dtype)
        A = xp.reshape(xp.take(F, ch.cols, axis=0), (B, D, k)) * m[..., None]
        y = (xp.reshape(xp.take(data, ch.pos), (B, D)) if layout.n_obs else xp.zeros((B, D), dtype=F.dtype, device=dev)) * m
        SA, Sb = _countsketch_batch(A, y, ch.groups, ch.cols, ch.mask, s, seed, xp)
        SAs.append(SA)
        Sbs.append(Sb)
    if not SAs:
        return xp.zeros((0, s, k), dtype=F.dtype, device=dev), xp.zeros((0, s), dtype=F.dtype, device=dev)
    SA = xp.take(xp.concat(SAs, axis=0), layout.inverse, axis=0)
    Sb = xp.take(xp.concat(Sbs, axis=0), layout.inverse, axis=0)
    return SA, Sb
