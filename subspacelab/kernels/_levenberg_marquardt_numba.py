"""Numba CPU implementation of :func:`subspacelab.kernels.levenberg_marquardt`.

The per-item algorithm is written once below in scalar Python (only ``math`` and element
indexing); ``register_jitable`` makes the same functions callable from ``numba.njit`` code here
and from the ``numba.cuda`` kernel in :mod:`._levenberg_marquardt_cuda`, and they stay plain
Python callables. They follow the generic array-API implementation in
:mod:`.levenberg_marquardt` step for step (same damping, scaling, bound handling and stopping
rules); only the order of floating-point summations differs. They live in this file, next to
the cached ``njit`` entry point, because Numba's on-disk cache is invalidated only when the
entry point's own source file changes.

One ``prange`` iteration per item runs the whole damped Gauss–Newton loop of :func:`lm_item`:
J^T W J and J^T W r are accumulated source by source from the analytic Jacobian, so no
(n_sources, n_params) Jacobian is stored.

Parameter layout of one item: ``[opd (pd), phase (pp), reflectivity (pr), gain (pg)]``.
"""

import math

import numba
import numpy as np
from numba.extending import register_jitable



TWO_PI = 2.0 * math.pi
LAMBDA0 = 1e-3
LAMBDA_MAX = 1e20
PENALTY = 1e6
ACTIVE_T = 0.5
EPS_B = 1e-9
TINY = 1e-300
BLOCK = 16


@register_jitable
def response(phi, r, order):
    """Scaled response A and dA/dR, dA/dphi (Airy for order 0, N-wave otherwise)."""
    if order == 0:
        c = math.cos(phi)
        s = math.sin(phi)
        d = 1.0 + r * r - 2.0 * r * c
        a = (1.0 - r * r) / d
        a_r = (-2.0 * r * d - (1.0 - r * r) * (2.0 * r - 2.0 * c)) / (d * d)
        a_p = -2.0 * r * (1.0 - r * r) * s / (d * d)
        return a, a_r, a_p
    cs = 0.0
    sn = 0.0
    dcs_r = 0.0
    dsn_r = 0.0
    dcs_p = 0.0
    dsn_p = 0.0
    q = 0.0
    dq = 0.0
    rk = 1.0
    for k in range(order):
        ck = math.cos(k * phi)
        sk = math.sin(k * phi)
        cs += rk * ck
        sn += rk * sk
        if k > 0:
            rk1 = k * r ** (k - 1)
            dcs_r += rk1 * ck
            dsn_r += rk1 * sk
            dcs_p -= k * rk * sk
            dsn_p += k * rk * ck
            dq += 2.0 * k * r ** (2 * k - 1)
        q += rk * rk
        rk = rk * r
    m2 = cs * cs + sn * sn
    a = m2 / q
    a_r = 2.0 * (cs * dcs_r + sn * dsn_r) / q - m2 * dq / (q * q)
    a_p = 2.0 * (cs * dcs_p + sn * dsn_p) / q
    return a, a_r, a_p


@register_jitable
def evaluate(b, th, y, w, has_w, md, bp, br, bg, order, with_jac, h, grad, jblk, rblk):
    """Cost 0.5 * sum w (T - y)^2 of item ``b`` at ``th``; with_jac fills H = J^T W J and J^T W r.

    Jacobian rows are gathered BLOCK sources at a time into ``jblk`` (n_params, BLOCK), scaled
    by sqrt(w), so that the J^T J update runs over contiguous memory.
    """
    n = y.shape[1]
    pd = md.shape[1]
    pp = bp.shape[1]
    pr = br.shape[1]
    pg = bg.shape[1]
    npar = pd + pp + pr + pg
    o_p = pd
    o_r = pd + pp
    o_g = pd + pp + pr
    if with_jac:
        for k in range(npar):
            grad[k] = 0.0
            for m in range(npar):
                h[k, m] = 0.0
    cost = 0.0
    nb = 0
    for j in range(n):
        wj = w[b, j] if has_w else 1.0
        if wj != 0.0:
            acc = 0.0
            for k in range(pd):
                acc += md[j, k] * th[k]
            phi = TWO_PI * acc
            for k in range(pp):
                phi -= bp[j, k] * th[o_p + k]
            r = 0.0
            for k in range(pr):
                r += br[j, k] * th[o_r + k]
            g = 0.0
            for k in range(pg):
                g += bg[j, k] * th[o_g + k]
            a, a_r, a_p = response(phi, r, order)
            res = g * a - y[b, j]
            cost += 0.5 * wj * res * res
            if with_jac:
                sw = math.sqrt(wj)
                for k in range(pd):
                    jblk[k, nb] = sw * g * a_p * TWO_PI * md[j, k]
                for k in range(pp):
                    jblk[o_p + k, nb] = -sw * g * a_p * bp[j, k]
                for k in range(pr):
                    jblk[o_r + k, nb] = sw * g * a_r * br[j, k]
                for k in range(pg):
                    jblk[o_g + k, nb] = sw * a * bg[j, k]
                rblk[nb] = sw * res
                nb += 1
        if with_jac and (nb == BLOCK or (j == n - 1 and nb > 0)):
            for k in range(npar):
                acc = 0.0
                for q in range(nb):
                    acc += jblk[k, q] * rblk[q]
                grad[k] += acc
                for m in range(k, npar):
                    acc = 0.0
                    for q in range(nb):
                        acc += jblk[k, q] * jblk[m, q]
                    h[k, m] += acc
            nb = 0
    if with_jac:
        for k in range(npar):
            for m in range(k):
                h[k, m] = h[m, k]
    return cost


@register_jitable
def build_system(h, grad, diag, free, lam, mat, rhs, npar):
    """M = H + lam diag(D) restricted to the free parameters (fixed ones decoupled)."""
    for k in range(npar):
        for m in range(npar):
            mat[k, m] = h[k, m] if (free[k] and free[m]) else 0.0
        if free[k]:
            mat[k, k] += lam * diag[k]
            rhs[k] = -grad[k]
        else:
            mat[k, k] = 1.0
            rhs[k] = 0.0


@register_jitable
def cholesky_solve(mat, rhs, out, n):
    """Solve mat @ out = rhs in place (mat overwritten by its Cholesky factor); False if not PD."""
    for k in range(n):
        s = mat[k, k]
        for m in range(k):
            s -= mat[k, m] * mat[k, m]
        if not (s > 0.0):
            return False
        lkk = math.sqrt(s)
        mat[k, k] = lkk
        for i in range(k + 1, n):
            t = mat[i, k]
            for m in range(k):
                t -= mat[i, m] * mat[k, m]
            mat[i, k] = t / lkk
    for i in range(n):
        t = rhs[i]
        for m in range(i):
            t -= mat[i, m] * out[m]
        out[i] = t / mat[i, i]
    for i in range(n - 1, -1, -1):
        t = out[i]
        for m in range(i + 1, n):
            t -= mat[m, i] * out[m]
        out[i] = t / mat[i, i]
    return True


@register_jitable
def max_step(th, delta, br, o_r, rmax, active, n_act):
    """Largest alpha in [0, 1] keeping R(sigma_j) = Br[j] @ c_R in [-EPS_B, rmax + EPS_B] at
    every source j outside the active set, and the source that limits it (-1 when alpha = 1)."""
    n = br.shape[0]
    pr = br.shape[1]
    alpha = 1.0
    jmin = -1
    for j in range(n):
        skip = False
        for q in range(n_act):
            if active[q] == j:
                skip = True
        if skip:
            continue
        rv = 0.0
        dr = 0.0
        for k in range(pr):
            rv += br[j, k] * th[o_r + k]
            dr += br[j, k] * delta[o_r + k]
        if dr < 0.0:
            t = (rv + EPS_B) / (-dr)
            if t < alpha:
                alpha = t
                jmin = j
        elif dr > 0.0:
            t = (rmax + EPS_B - rv) / dr
            if t < alpha:
                alpha = t
                jmin = j
    if alpha < 0.0:
        alpha = 0.0
    return alpha, jmin


@register_jitable
def project_feasible(th, br, o_r, rmax):
    """Remove the at most EPS_B-sized violation left by the steps so that 0 <= R(sigma_j) <= rmax
    holds: map [min(min R, 0), max(max R, rmax)] affinely onto [0, rmax] (the first design
    column is the constant 1, so this changes c_R by a factor and its constant term)."""
    n = br.shape[0]
    pr = br.shape[1]
    lo = 0.0
    hi = rmax
    for j in range(n):
        rv = 0.0
        for k in range(pr):
            rv += br[j, k] * th[o_r + k]
        if rv < lo:
            lo = rv
        if rv > hi:
            hi = rv
    if lo < 0.0 or hi > rmax:
        # affine map of [min(lo, 0), max(hi, rmax)] onto [0, rmax]
        kappa = rmax / (hi - lo)
        for k in range(pr):
            th[o_r + k] *= kappa
        th[o_r] -= kappa * lo


@register_jitable
def add_penalty(j, th, br, o_r, rmax, diag, free, mat, rhs):
    """Hold source j on its nearest bound: add PENALTY-weighted (b_j^T delta - target)^2 to the
    damped system (weight scaled by D), target = bound - R(sigma_j)."""
    pr = br.shape[1]
    nrm = 0.0
    rv = 0.0
    for k in range(pr):
        rv += br[j, k] * th[o_r + k]
        if free[o_r + k]:
            nrm += br[j, k] * br[j, k] / diag[o_r + k]
    target = -rv if rv < 0.5 * rmax else rmax - rv
    if nrm > 0.0:
        rho = PENALTY / nrm
        for k in range(pr):
            if free[o_r + k]:
                rhs[o_r + k] += rho * target * br[j, k]
                for m in range(pr):
                    if free[o_r + m]:
                        mat[o_r + k, o_r + m] += rho * br[j, k] * br[j, m]


@register_jitable
def lm_item(b, y, w, has_w, md, bp, br, bg, theta, free, order, rmax, bounded, max_iter, tol,
            cur, trial, h, mat, grad, rhs, delta, diag, jblk, rblk, active, h2, grad2):
    """Run Levenberg–Marquardt on item ``b`` in place; returns (cost, n_iter, status).

    status: 1 converged (ftol/xtol), 0 max_iter reached, 2 stalled (damping overflow).
    """
    npar = md.shape[1] + bp.shape[1] + br.shape[1] + bg.shape[1]
    o_r = md.shape[1] + bp.shape[1]
    for k in range(npar):
        cur[k] = theta[b, k]
    lam = LAMBDA0
    nu = 2.0
    cost = evaluate(b, cur, y, w, has_w, md, bp, br, bg, order, True, h, grad, jblk, rblk)
    for k in range(npar):
        diag[k] = h[k, k] if h[k, k] > TINY else TINY
    status = 0
    it = 0
    if not (cost > 0.0):
        status = 1
    while status == 0 and it < max_iter:
        it += 1
        build_system(h, grad, diag, free, lam, mat, rhs, npar)
        if not cholesky_solve(mat, rhs, delta, npar):
            lam *= nu
            nu *= 2.0
            if lam > LAMBDA_MAX:
                status = 2
            continue
        alpha = 1.0
        solved = True
        if bounded:
            # active set rebuilt at every iteration: while the step would take a source across a
            # bound within its first ACTIVE_T fraction, pin that source on the bound and re-solve
            # (at most one source per reflectivity coefficient); a step blocked later is shortened
            n_act = 0
            alpha, jb = max_step(cur, delta, br, o_r, rmax, active, n_act)
            while solved and alpha <= ACTIVE_T and n_act < br.shape[1]:
                active[n_act] = jb
                n_act += 1
                build_system(h, grad, diag, free, lam, mat, rhs, npar)
                for q in range(n_act):
                    add_penalty(active[q], cur, br, o_r, rmax, diag, free, mat, rhs)
                solved = cholesky_solve(mat, rhs, delta, npar)
                if solved:
                    alpha, jb = max_step(cur, delta, br, o_r, rmax, active, n_act)
        if not solved:
            lam *= nu
            nu *= 2.0
            if lam > LAMBDA_MAX:
                status = 2
            continue
        gd = 0.0
        dhd = 0.0
        step2 = 0.0
        x2 = 0.0
        for k in range(npar):
            gd += grad[k] * delta[k]
            hk = 0.0
            for m in range(npar):
                hk += h[k, m] * delta[m]
            dhd += delta[k] * hk
            step2 += delta[k] * delta[k]
            x2 += cur[k] * cur[k]
            trial[k] = cur[k] + alpha * delta[k]
        step = alpha * math.sqrt(step2)
        small = alpha == 1.0 and step <= tol * (tol + math.sqrt(x2))
        # the trial evaluation also accumulates J^T W J and J^T W r (into h2, grad2): an accepted
        # step then needs no second pass over the sources
        new_cost = evaluate(b, trial, y, w, has_w, md, bp, br, bg, order, True, h2, grad2, jblk, rblk)
        if new_cost < cost:
            pred = -alpha * gd - 0.5 * alpha * alpha * dhd
            rho = (cost - new_cost) / pred if pred > 0.0 else 1.0
            f = 2.0 * rho - 1.0
            f = 1.0 - f * f * f
            lam *= f if f > 1.0 / 3.0 else 1.0 / 3.0
            nu = 2.0
            drop = cost - new_cost
            old = cost
            for k in range(npar):
                cur[k] = trial[k]
                grad[k] = grad2[k]
                for m in range(npar):
                    h[k, m] = h2[k, m]
            cost = new_cost
            for k in range(npar):
                if h[k, k] > diag[k]:
                    diag[k] = h[k, k]
            if drop <= tol * old or small or not (cost > 0.0):
                status = 1
        else:
            lam *= nu
            nu *= 2.0
            if small:
                status = 1
            elif lam > LAMBDA_MAX:
                status = 2
    if bounded:
        project_feasible(cur, br, o_r, rmax)
        cost = evaluate(b, cur, y, w, has_w, md, bp, br, bg, order, False, h, grad, jblk, rblk)
    for k in range(npar):
        theta[b, k] = cur[k]
    return cost, it, status


@numba.njit(parallel=True, cache=True, nogil=True, fastmath={"reassoc", "contract", "nsz"})
def _run(y, w, has_w, md, bp, br, bg, theta, free, order, rmax, bounded, max_iter, tol, cost, n_iter, status):
    bsz = y.shape[0]
    npar = theta.shape[1]
    for b in numba.prange(bsz):
        cur = np.empty(npar)
        trial = np.empty(npar)
        h = np.empty((npar, npar))
        mat = np.empty((npar, npar))
        grad = np.empty(npar)
        rhs = np.empty(npar)
        delta = np.empty(npar)
        diag = np.empty(npar)
        jblk = np.empty((npar, BLOCK))
        rblk = np.empty(BLOCK)
        active = np.empty(npar, dtype=np.int64)
        h2 = np.empty((npar, npar))
        grad2 = np.empty(npar)
        c, it, st = lm_item(b, y, w, has_w, md, bp, br, bg, theta, free, order, rmax, bounded, max_iter, tol,
                            cur, trial, h, mat, grad, rhs, delta, diag, jblk, rblk, active, h2, grad2)
        cost[b] = c
        n_iter[b] = it
        status[b] = st


def levenberg_marquardt_numba(y, w, md, bp, br, bg, theta0, free, order, rmax, bounded, max_iter, tol):
    """NumPy float64 arrays in; returns (theta, cost, n_iter, status) as NumPy arrays."""
    bsz = y.shape[0]
    theta = np.array(theta0, dtype=np.float64, order="C", copy=True)
    has_w = w is not None
    w = np.ones((1, 1)) if w is None else w
    cost = np.empty(bsz)
    n_iter = np.empty(bsz, dtype=np.int64)
    status = np.empty(bsz, dtype=np.int64)
    # items need very different numbers of iterations: hand them out in small chunks so that a
    # thread that is slowed down (or busy with a hard item) does not hold up the others
    with numba.parallel_chunksize(4):
        _run(y, w, has_w, md, bp, br, bg, theta, free.astype(np.bool_), int(order), float(rmax), bool(bounded),
             int(max_iter), float(tol), cost, n_iter, status)
    return theta, cost, n_iter, status
