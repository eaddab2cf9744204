"""Per-group least-squares routines shared by the Numba CPU and numba.cuda kernels.

These are plain Python functions written in the subset of Python that both ``numba.njit`` and
``numba.cuda.jit(device=True)`` compile: scalar loops over preallocated scratch arrays, no
allocation, integer hashing in int64 without overflow. :func:`compile_core` rebinds them so
that calls between them resolve to compiled versions of the chosen target; the generic
array-API path (:mod:`subspacelab.kernels.masked_normal_eq`) computes the same quantities with
batched array operations and is the reference they are tested against.

Group ``g`` (a row of a CSR pattern, or a column of a CSC one) owns observations
``p in [indptr[g], indptr[g+1])`` at feature rows ``F[indices[p], :]`` with targets
``data[p]``. With ``A`` the stacked feature rows and ``y`` the targets, every routine solves

    min_x ||A x - y||^2 + ridge * ||x||^2,

i.e. the normal equations ``(A^T A + ridge I) x = A^T y``.
"""

import math
import types

import numpy as np

_MASK32 = 0xFFFFFFFF
_MULT = 0x45D9F3B  # < 2**27, so (x < 2**32) * _MULT < 2**59 fits in int64: no overflow anywhere


def hash32(x):
    """32-bit integer mixer (two xorshift-multiply rounds) evaluated in int64."""
    x = x & _MASK32
    x = (((x >> 16) ^ x) * _MULT) & _MASK32
    x = (((x >> 16) ^ x) * _MULT) & _MASK32
    return (x >> 16) ^ x


def sketch_hash(seed, group, col):
    """Counter-based hash of (seed, group, column): independent of thread count and order."""
    return hash32(hash32(hash32(np.int64(seed)) ^ (np.int64(group) & _MASK32)) ^ (np.int64(col) & _MASK32))


def gram_rhs(indptr, indices, data, F, g, G, b, ridge):
    """G = A^T A + ridge I (full symmetric), b = A^T y for group g; returns trace(A^T A)."""
    k = F.shape[1]
    for a in range(k):
        b[a] = 0.0
        for c in range(k):
            G[a, c] = 0.0
    for p in range(indptr[g], indptr[g + 1]):
        j = indices[p]
        y = data[p]
        for a in range(k):
            fa = F[j, a]
            b[a] += y * fa
            for c in range(a, k):
                G[a, c] += fa * F[j, c]
    tr = 0.0
    for a in range(k):
        tr += G[a, a]
        G[a, a] += ridge
        for c in range(a):
            G[a, c] = G[c, a]
    return tr


def jitter_of(tr, k, ridge, jitter_rel):
    """Diagonal jitter added before factorisation: jitter_rel * (trace(A^T A)/k + ridge).

    A group with no observations and no ridge gets the smallest positive jitter, so its
    solution is exactly zero rather than NaN.
    """
    d = jitter_rel * (tr / k + ridge)
    if d <= 0.0:
        d = 1e-300
    return d


def chol_factor(G, delta):
    """In-place lower Cholesky factor of G + delta I (pivots clamped at delta: PSD-safe)."""
    k = G.shape[0]
    for j in range(k):
        s = G[j, j] + delta
        for t in range(j):
            s -= G[j, t] * G[j, t]
        if s < delta:
            s = delta
        d = math.sqrt(s)
        G[j, j] = d
        for i in range(j + 1, k):
            v = G[i, j]
            for t in range(j):
                v -= G[i, t] * G[j, t]
            G[i, j] = v / d


def chol_solve(L, b, x):
    """Solve L L^T x = b for the lower factor L (b and x may be the same array)."""
    k = L.shape[0]
    for i in range(k):
        v = b[i]
        for t in range(i):
            v -= L[i, t] * x[t]
        x[i] = v / L[i, i]
    for i in range(k - 1, -1, -1):
        v = x[i]
        for t in range(i + 1, k):
            v -= L[t, i] * x[t]
        x[i] = v / L[i, i]


def solve_exact(indptr, indices, data, F, g, ridge, jitter_rel, G, b, x):
    """Exact solve of group g: Gram/RHS accumulation, jittered Cholesky, two triangular solves."""
    k = F.shape[1]
    tr = gram_rhs(indptr, indices, data, F, g, G, b, ridge)
    chol_factor(G, jitter_of(tr, k, ridge, jitter_rel))
    chol_solve(G, b, x)


def normal_matvec(indptr, indices, F, g, ridge, v, out):
    """out = (A^T A + ridge I) v in O(|group| k), never forming A^T A."""
    k = F.shape[1]
    for a in range(k):
        out[a] = ridge * v[a]
    for p in range(indptr[g], indptr[g + 1]):
        j = indices[p]
        s = 0.0
        for a in range(k):
            s += F[j, a] * v[a]
        for a in range(k):
            out[a] += s * F[j, a]


def normal_residual(indptr, indices, data, F, g, ridge, x, r, bvec):
    """r = A^T (y - A x) - ridge x and bvec = A^T y in one pass; returns ||A^T y||."""
    k = F.shape[1]
    for a in range(k):
        r[a] = -ridge * x[a]
        bvec[a] = 0.0
    for p in range(indptr[g], indptr[g + 1]):
        j = indices[p]
        y = data[p]
        s = y
        for a in range(k):
            s -= F[j, a] * x[a]
        for a in range(k):
            fa = F[j, a]
            r[a] += s * fa
            bvec[a] += y * fa
    bn = 0.0
    for a in range(k):
        bn += bvec[a] * bvec[a]
    return math.sqrt(bn)


def pcg(indptr, indices, data, F, g, ridge, x, n_steps, tol, L, use_precond, r, z, p, q):
    """Conjugate gradients on the normal equations of group g from the start ``x`` (in place).

    With ``use_precond`` the preconditioner is (L L^T)^{-1}, L lower triangular (k x k).
    Stops after ``n_steps`` steps or when ||r|| <= tol * ||A^T y||. Returns the steps taken.
    """
    k = F.shape[1]
    bnorm = normal_residual(indptr, indices, data, F, g, ridge, x, r, q)
    if use_precond:
        chol_solve(L, r, z)
    else:
        for a in range(k):
            z[a] = r[a]
    rz = 0.0
    rr = 0.0
    for a in range(k):
        p[a] = z[a]
        rz += r[a] * z[a]
        rr += r[a] * r[a]
    it = 0
    while it < n_steps:
        if math.sqrt(rr) <= tol * bnorm or rz <= 0.0:
            break
        normal_matvec(indptr, indices, F, g, ridge, p, q)
        pq = 0.0
        for a in range(k):
            pq += p[a] * q[a]
        if pq <= 0.0:
            break
        alpha = rz / pq
        rr = 0.0
        for a in range(k):
            x[a] += alpha * p[a]
            r[a] -= alpha * q[a]
            rr += r[a] * r[a]
        if use_precond:
            chol_solve(L, r, z)
        else:
            for a in range(k):
                z[a] = r[a]
        rz_new = 0.0
        for a in range(k):
            rz_new += r[a] * z[a]
        beta = rz_new / rz
        rz = rz_new
        for a in range(k):
            p[a] = z[a] + beta * p[a]
        it += 1
    return it


def countsketch_group(indptr, indices, data, F, g, seed, SA, Sb):
    """SA = S A and Sb = S y for group g, S the CountSketch with s = SA.shape[0] buckets.

    Observation p goes to bucket h % s with sign +1 or -1 from bit 31 of h, where
    h = sketch_hash(seed, g, indices[p]): a counter-based hash, so the sketch of a group does
    not depend on thread count or on which other groups are sketched.
    """
    s = SA.shape[0]
    k = F.shape[1]
    for t in range(s):
        Sb[t] = 0.0
        for a in range(k):
            SA[t, a] = 0.0
    for p in range(indptr[g], indptr[g + 1]):
        j = indices[p]
        h = sketch_hash(seed, g, j)
        bucket = h % s
        sign = 1.0 - 2.0 * ((h >> 31) & 1)
        Sb[bucket] += sign * data[p]
        for a in range(k):
            SA[bucket, a] += sign * F[j, a]


def solve_sketch(indptr, indices, data, F, g, ridge, jitter_rel, seed, x, warm, n_steps, tol, SA, Sb, G, r, z, p, q):
    """Sketch-and-precondition solve of group g (the Gu-Song-Yin-Zhang inner solver).

    When the group has no more observations than the sketch has rows, the exact solve is used
    (sketching could only lose information). Otherwise: CountSketch (SA, Sb); triangular
    factor L of (SA)^T SA + ridge I; start from ``x`` when ``warm`` else from the
    sketch-and-solve point; preconditioned CG on the full normal equations. Returns the CG
    steps taken (0 for the exact branch).
    """
    k = F.shape[1]
    s = SA.shape[0]
    if indptr[g + 1] - indptr[g] <= s:
        tr = gram_rhs(indptr, indices, data, F, g, G, r, ridge)
        chol_factor(G, jitter_of(tr, k, ridge, jitter_rel))
        chol_solve(G, r, x)
        return 0
    countsketch_group(indptr, indices, data, F, g, seed, SA, Sb)
    tr = 0.0
    for a in range(k):
        z[a] = 0.0
        for c in range(a, k):
            v = 0.0
            for t in range(s):
                v += SA[t, a] * SA[t, c]
            G[a, c] = v
        for t in range(s):
            z[a] += SA[t, a] * Sb[t]
        tr += G[a, a]
        G[a, a] += ridge
        for c in range(a):
            G[a, c] = G[c, a]
    chol_factor(G, jitter_of(tr, k, ridge, jitter_rel))
    if not warm:
        chol_solve(G, z, x)
    return pcg(indptr, indices, data, F, g, ridge, x, n_steps, tol, G, True, r, z, p, q)


_NAMES = (
    "hash32",
    "sketch_hash",
    "gram_rhs",
    "jitter_of",
    "chol_factor",
    "chol_solve",
    "solve_exact",
    "normal_matvec",
    "normal_residual",
    "pcg",
    "countsketch_group",
    "solve_sketch",
)


def compile_core(jit):
    """Compile every routine with ``jit`` so that calls between them use compiled versions.

    Returns a namespace whose attributes are the compiled routines. Each function is rebound to
    a fresh globals dict in which the names of the other routines refer to their compiled
    twins (``numba.njit`` and ``numba.cuda.jit(device=True)`` resolve globals at compile time).
    """
    ns = dict(globals())
    out = types.SimpleNamespace()
    for name in _NAMES:
        f = globals()[name]
        g = types.FunctionType(f.__code__, ns, name, f.__defaults__, f.__closure__)
        compiled = jit(g)
        ns[name] = compiled
        setattr(out, name, compiled)
    return out
