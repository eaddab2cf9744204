"""AltMinCompleter.fit on a Dask array: blocked alternating least squares.

The observations are read once, chunk by chunk, into two persisted sets of blocks: row blocks
(CSR over a range of rows, all columns) and column blocks (CSC over a range of columns). The
factors, O((m + n) k), stay with the caller and are broadcast to the blocks at every
half-step; each block solves its own rows (columns) with the in-memory per-row kernel
:func:`subspacelab.kernels.masked_normal_eq`, so a row's solve sees exactly the numbers it
sees in the in-memory fit. Only factor-sized arrays and scalars come back to the caller: the
observations are never gathered in one place, and the dense matrix is never formed.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from .._backend import check_random_state
from .._dask import current_client, kernel_guard
from ..kernels.masked_normal_eq import masked_normal_eq
from ..kernels.residual import sampled_residual

__all__ = ["fit_dask"]

class _Block:
    """Observations of a range ``[lo, hi)`` of rows (CSR) or of columns (CSC), sorted like the
    in-memory fit's patterns: by group, then by the other index."""

    def __init__(self, lo, hi, indptr, indices, vals):
        self.lo, self.hi = lo, hi
        self.indptr, self.indices, self.vals = indptr, indices, vals
        self.degree = np.diff(indptr)

    def groups(self):
        """Global group index (row for a row block, column for a column block) of each entry."""
        return np.repeat(np.arange(self.lo, self.hi, dtype=np.int64), self.degree)


def _chunk_coo(chunk, r0, c0, dtype):
    """Observed (rows, cols, values) of one chunk, in global coordinates."""
    if sp.issparse(chunk):
        coo = sp.coo_matrix(chunk)
        vals = np.asarray(coo.data)
        if not np.all(np.isfinite(vals)):
            raise ValueError(
                f"X has NaN or infinite stored entries in the sparse chunk at rows {r0}.. and "
                f"columns {c0}... In sparse input the stored entries are the observations and "
                "implicit zeros are missing, so missing entries must simply not be stored."
            )
        r, c = np.asarray(coo.row, dtype=np.int64), np.asarray(coo.col, dtype=np.int64)
        key = np.sort(r * chunk.shape[1] + c)
        if key.size > 1 and bool(np.any(key[1:] == key[:-1])):
            raise ValueError(
                f"X has duplicate coordinates in the sparse chunk at rows {r0}.. and columns "
                f"{c0}..; each observed entry must be stored once (duplicates are not summed)."
            )
    elif isinstance(chunk, np.ndarray):
        if np.any(np.isinf(chunk)):
            raise ValueError(
                f"X contains infinity in the chunk at rows {r0}.. and columns {c0}..; missing "
                "entries are marked with NaN, every other entry must be finite."
            )
        r, c = np.nonzero(~np.isnan(chunk))
        vals = chunk[r, c]
        r, c = r.astype(np.int64), c.astype(np.int64)
    else:
        raise TypeError(
            "AltMinCompleter on a Dask array needs NumPy chunks (NaN = missing) or scipy.sparse "
            f"chunks (stored = observed); got a chunk of type {type(chunk).__name__}"
        )
    return r + r0, c + c0, vals.astype(dtype)


def _slice_coo(coo, axis, lo, hi):
    keep = (coo[axis] >= lo) & (coo[axis] < hi)
    return tuple(a[keep] for a in coo)


def _make_block(pieces, lo, hi, axis):
    rows = np.concatenate([p[0] for p in pieces])
    cols = np.concatenate([p[1] for p in pieces])
    vals = np.concatenate([p[2] for p in pieces])
    group, other = (rows, cols) if axis == 0 else (cols, rows)
    order = np.lexsort((other, group))
    counts = np.bincount(group - lo, minlength=hi - lo)
    indptr = np.zeros(hi - lo + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return _Block(lo, hi, indptr, other[order], vals[order])


def _block_stats(b):
    return b.degree, float(np.sum(b.vals, dtype=np.float64))


def _block_degree(b):
    return b.degree


def _block_sumsq(b, mu_t):
    y = (b.vals - mu_t).astype(np.float64)
    return float(np.sum(y * y))


def _block_product(b, Q, p, mu_t, n_other):
    """Rows lo..hi of Y @ Q (row block) or of Y.T @ Q (column block), Y = P_Omega(M - mu) / p."""
    data = (b.vals - mu_t).astype(np.float64) / p
    Y = sp.csr_matrix((data, b.indices, b.indptr), shape=(b.hi - b.lo, n_other))
    return Y @ Q


def _block_solve(b, F, shift, x0, ridge, count_scaled, method, n_steps, tol, sketch_size, seed, mu_t):
    data = b.vals - mu_t
    if shift is not None:
        data = data - shift[b.indices]
    lam = ridge * b.degree.astype(F.dtype) if count_scaled else ridge
    indptr = b.indptr
    if method == "sketch" and b.lo:
        # the sketch hash depends on the group's index: pad with empty groups so that every
        # group keeps its global index (and its in-memory sketch)
        indptr = np.concatenate([np.zeros(b.lo, dtype=np.int64), b.indptr])
        if x0 is not None:
            x0 = np.concatenate([np.zeros((b.lo, x0.shape[1]), dtype=x0.dtype), x0])
        if count_scaled:
            lam = np.concatenate([np.zeros(b.lo, dtype=F.dtype), lam])
    with kernel_guard():
        sol = masked_normal_eq(
            indptr, b.indices, data, F, lam, method=method, x0=x0, n_steps=n_steps, tol=tol,
            sketch_size=sketch_size, seed=seed, check_input=False,
        )
    return sol[b.lo:] if indptr is not b.indptr else sol


def _block_rss(b, U_rows, V, a_rows, c, mu_t):
    """Residual sum of squares of the row block (U_rows, a_rows: its rows of U and a)."""
    target = b.vals - mu_t
    local = np.repeat(np.arange(b.hi - b.lo, dtype=np.int64), b.degree)
    if a_rows is not None:
        target = target - a_rows[local] - c[b.indices]
    with kernel_guard():
        r = sampled_residual(local, b.indices, target, U_rows, V, check_input=False)
    return float(np.sum(r.astype(np.float64) ** 2))


def _even_edges(size, n_groups):
    return np.array([size * g // n_groups for g in range(n_groups + 1)], dtype=np.int64)


def fit_dask(est, X):
    """Fit ``est`` (an AltMinCompleter) on the Dask array ``X`` by blocked ALS."""
    import dask
    import dask.array as da

    if not isinstance(X, da.Array):
        raise TypeError(
            f"AltMinCompleter accepts Dask arrays (dask.array.Array), got {type(X).__name__}; "
            "a Dask DataFrame of (row, col, value) triplets can be turned into a Dask array "
            "with scipy.sparse chunks (stored entries = observations)"
        )
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (m, n), got a Dask array with shape {X.shape}")
    if any(math.isnan(c) for cs in X.chunks for c in cs):
        raise ValueError("X has unknown chunk sizes; call X.compute_chunk_sizes() first")
    m, n = (int(d) for d in X.shape)
    if m == 0 or n == 0:
        raise ValueError(f"X is empty (shape {(m, n)}); AltMinCompleter needs at least one row and column")
    if not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer) or X.dtype == np.bool_):
        raise TypeError(f"X must have a real numeric dtype, got {X.dtype}")
    if est.sample_splitting:
        raise ValueError(
            "sample_splitting=True is not available for Dask input: its random pieces are drawn "
            "over the in-memory order of all observations. Fit in memory or set sample_splitting=False."
        )
    sparse_chunks = sp.issparse(getattr(X, "_meta", None))
    k = est._check_rank(m, n)
    dtype = np.dtype(np.float32) if X.dtype == np.float32 else np.dtype(np.float64)
    est.n_features_in_ = n
    if hasattr(est, "feature_names_in_"):
        del est.feature_names_in_

    # ---- read every chunk once into row blocks (X's row chunks) and column blocks (X's column
    # chunks, or as many column ranges as there are row blocks when X has fewer column chunks)
    row_edges = np.concatenate([[0], np.cumsum(X.chunks[0])]).astype(np.int64)
    chunk_col_edges = np.concatenate([[0], np.cumsum(X.chunks[1])]).astype(np.int64)
    n_row_blocks, n_col_chunks = len(X.chunks[0]), len(X.chunks[1])
    col_edges = chunk_col_edges if n_col_chunks >= n_row_blocks else _even_edges(n, n_row_blocks)
    chunks = X.to_delayed(optimize_graph=False)
    coo = [
        [dask.delayed(_chunk_coo)(chunks[i, j], row_edges[i], chunk_col_edges[j], dtype) for j in range(n_col_chunks)]
        for i in range(n_row_blocks)
    ]
    row_blocks = [
        dask.delayed(_make_block)([coo[i][j] for j in range(n_col_chunks)], row_edges[i], row_edges[i + 1], 0)
        for i in range(n_row_blocks)
    ]
    col_blocks = []
    for g in range(len(col_edges) - 1):
        lo, hi = col_edges[g], col_edges[g + 1]
        pieces = []
        for j in range(n_col_chunks):
            c0, c1 = chunk_col_edges[j], chunk_col_edges[j + 1]
            if c1 <= lo or c0 >= hi:
                continue
            whole = c0 >= lo and c1 <= hi
            for i in range(n_row_blocks):
                pieces.append(coo[i][j] if whole else dask.delayed(_slice_coo)(coo[i][j], 1, lo, hi))
        col_blocks.append(dask.delayed(_make_block)(pieces, lo, hi, 1))
    persisted = dask.persist(*row_blocks, *col_blocks)
    row_blocks, col_blocks = list(persisted[:n_row_blocks]), list(persisted[n_row_blocks:])
    row_ranges = [(int(row_edges[i]), int(row_edges[i + 1])) for i in range(n_row_blocks)]
    col_ranges = [(int(col_edges[g]), int(col_edges[g + 1])) for g in range(len(col_edges) - 1)]

    # ---- degrees, mean, RMS of the centred observations (small reductions)
    stats, col_deg = dask.compute(
        [dask.delayed(_block_stats)(b) for b in row_blocks], [dask.delayed(_block_degree)(b) for b in col_blocks]
    )
    deg_r = np.concatenate([s[0] for s in stats])
    deg_c = np.concatenate(col_deg)
    nnz = int(deg_r.sum())
    under = est._check_degrees(deg_r, deg_c, k, sparse_input=sparse_chunks)
    mu = sum(s[1] for s in stats) / nnz if est.center != "none" else 0.0
    mu_t = dtype.type(mu)
    (sumsq,) = dask.compute([dask.delayed(_block_sumsq)(b, mu_t) for b in row_blocks])
    y_rms = math.sqrt(sum(sumsq) / nnz) or 1.0
    p_hat = nnz / (m * n)

    client = current_client()

    def share(arr):
        """One copy per worker of a broadcast array (a scatter on a distributed cluster)."""
        if client is None or arr is None:
            return arr
        return client.scatter(arr, broadcast=True, hash=False)

    def blockwise(fn, blocks, *args, per_block=None):
        tasks = []
        for idx, b in enumerate(blocks):
            extra = per_block(idx) if per_block is not None else ()
            tasks.append(dask.delayed(fn)(b, *args, *extra))
        return dask.compute(*tasks)

    def product(blocks, Q, n_other):
        return np.concatenate(blockwise(_block_product, blocks, share(Q), p_hat, mu_t, n_other), axis=0)

    rng = check_random_state(est.random_state)
    if est.init == "random":
        U0 = rng.standard_normal((m, k))
    else:
        U0 = _randomized_left_vectors(
            lambda Q: product(row_blocks, Q, n), lambda Q: product(col_blocks, Q, m),
            m, n, k, int(rng.integers(0, 2**31 - 1)),
        )
    if est.clip_incoherence is not False:
        from .altmin import clip_rows

        U0 = clip_rows(U0, 2.0 if est.clip_incoherence is True else float(est.clip_incoherence))
    U0 = np.linalg.qr(U0)[0]
    sketch_seed = int(rng.integers(0, 2**31 - 1))

    biases = est.center == "biases"
    kk = k + int(biases)
    s = int(est.sketch_size) if est.sketch_size is not None else 4 * kk
    n_inner = est.inner_max_iter if est.inner_max_iter is not None else (3 if est.solver == "cg" else 8)
    ridge = float(est.ridge)
    count_scaled = est.ridge_scaling == "count" and ridge > 0

    def half_step(blocks, ranges, F, shift, x0, step):
        method = est.solver if step is not None else "exact"
        seed = (sketch_seed + (step or 0)) % (2**31 - 1)
        parts = blockwise(
            _block_solve, blocks, share(F), share(shift),
            per_block=lambda i: (None if x0 is None else x0[ranges[i][0]:ranges[i][1]],
                                 ridge, count_scaled, method, n_inner, float(est.inner_tol), s, seed, mu_t),
        )
        return np.concatenate(parts, axis=0)

    def solve_cols(a, F, x0, step):
        return half_step(col_blocks, col_ranges, F, a if biases else None, x0, step)

    def solve_rows(c, F, x0, step):
        return half_step(row_blocks, row_ranges, F, c if biases else None, x0, step)

    def train_rmse(U, V, a, c):
        Vs, cs = share(V), share(c if biases else None)
        rss = dask.compute(*[
            dask.delayed(_block_rss)(b, U[lo:hi], Vs, a[lo:hi] if biases else None, cs, mu_t)
            for b, (lo, hi) in zip(row_blocks, row_ranges)
        ])
        return math.sqrt(sum(rss) / nnz)

    import array_api_compat.numpy as xp

    est._alternate(
        solve_cols, solve_rows, train_rmse, U0.astype(dtype),
        m=m, n=n, k=k, mu=mu, p_hat=p_hat, y_rms=y_rms, dtype=dtype, xp=xp, dev="cpu", under=under,
    )


def _randomized_left_vectors(Y_mat, Yt_mat, m, n, k, seed):
    """Top-k left singular vectors of Y (m x n) known only through Y @ Q and Y.T @ Q.

    The steps, random draws and sign convention of scikit-learn's ``randomized_svd(Y, k,
    n_oversamples=max(10, k), n_iter=4, random_state=seed)``, which the in-memory fit calls:
    Gaussian test matrix, four LU-normalised power iterations, QR, SVD of the small projected
    matrix, ``svd_flip``. Only products with Y are distributed.
    """
    from sklearn.utils.extmath import svd_flip

    transpose = m < n
    A, At = (Yt_mat, Y_mat) if transpose else (Y_mat, Yt_mat)
    size = k + max(10, k)
    with threadpool_limits(limits=1, user_api="blas"):
        Q = np.random.RandomState(seed).normal(size=(m if transpose else n, size))
        for _ in range(4):
            Q, _ = scipy.linalg.lu(A(Q), permute_l=True, check_finite=False)
            Q, _ = scipy.linalg.lu(At(Q), permute_l=True, check_finite=False)
        Q, _ = scipy.linalg.qr(A(Q), mode="economic", check_finite=False)
        B = At(Q).T
        Uhat, _, Vt = scipy.linalg.svd(B, full_matrices=False, lapack_driver="gesdd")
        U = Q @ Uhat
        if not transpose:
            U, Vt = svd_flip(U, Vt)
            return U[:, :k]
        U, Vt = svd_flip(U, Vt, u_based_decision=False)
        return Vt[:k].T
