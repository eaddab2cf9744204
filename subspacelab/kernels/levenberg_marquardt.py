r"""Batched, bounded Levenberg–Marquardt for the Fabry–Perot transmittance model."""

from __future__ import annotations

import math
from typing import NamedTuple

from .._backend import get_namespace, supported_float_dtypes
from .._validation import check_param
from ..optics import _raw, model_order
from ._dispatch import from_cuda, from_host, select_backend, to_cuda, to_host

__all__ = ["LMResult", "levenberg_marquardt"]

# Constants shared with the scalar (Numba/CUDA) implementation.
LAMBDA0 = 1e-3
LAMBDA_MAX = 1e20
PENALTY = 1e6
ACTIVE_T = 0.5
EPS_B = 1e-9
TINY = 1e-300


class LMResult(NamedTuple):
    r"""Result of :func:`levenberg_marquardt`.

    Attributes
    ----------
    params : array, shape (n_items, n_params)
        Final parameters, layout ``[opd, phase, reflectivity, gain]`` coefficient blocks.
    cost : array, shape (n_items,)
        :math:`\tfrac12\sum_j w_{ij} r_{ij}^2` at ``params``.
    n_iter : array of int, shape (n_items,)
        Iterations (damped solves) performed per item.
    status : array of int, shape (n_items,)
        1 converged (relative cost decrease or step below ``tol``), 0 ``max_iter`` reached,
        2 stalled (the damping overflowed without finding a descent step).

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.kernels import LMResult, levenberg_marquardt
    >>> from subspacelab.optics import transmittance
    >>> s = np.linspace(1.0, 2.0, 200)
    >>> y = transmittance(s, 10.0, 1.0, 0.3, 2.0)[None, :]
    >>> ones = np.ones((200, 1))
    >>> res = levenberg_marquardt(y, s[:, None], ones, ones, ones, np.array([[10.01, 1.1, 0.2, 1.8]]))
    >>> isinstance(res, LMResult), res.params.shape, res.status.tolist()
    (True, (1, 4), [1])
    """

    params: object
    cost: object
    n_iter: object
    status: object


def levenberg_marquardt(
    y,
    opd_design,
    phase_design,
    reflectivity_design,
    gain_design,
    params0,
    *,
    weights=None,
    free=None,
    model="airy",
    reflectivity_max=0.99,
    bounds=True,
    max_iter=100,
    tol=1e-10,
    backend="auto",
):
    r"""Fit the Fabry–Perot model to many items at once by bounded Levenberg–Marquardt.

    Each item :math:`i` (an interferometer or a detector pixel) has data :math:`y_{ij}` at the
    shared wavenumbers :math:`\sigma_j` and parameters :math:`\theta_i = (c_\delta, c_\psi,
    c_R, c_g)`, the coefficient vectors of four linear models over shared design matrices
    :math:`M, B_\psi, B_R, B_g` (rows indexed by :math:`j`):

    .. math::

        \varphi_{ij} = 2\pi (M c_\delta)_j - (B_\psi c_\psi)_j,\quad
        R_{ij} = (B_R c_R)_j,\quad g_{ij} = (B_g c_g)_j,\quad
        T_{ij} = g_{ij}\,A(R_{ij}, \varphi_{ij}),

    with :math:`A` the scaled Airy or N-wave response of :mod:`subspacelab.optics`. For the
    physical parameterisation :math:`\varphi = 2\pi\sigma\delta(\sigma) - \psi(\sigma)` take
    :math:`M_{jk} = \sigma_j b_k(\sigma_j)`; the calibrator uses a centred variant that
    decorrelates OPD and phase. The method minimises
    :math:`F_i = \tfrac12\sum_j w_{ij}(T_{ij} - y_{ij})^2` for every item independently:

    * analytic Jacobian, e.g. :math:`\partial T/\partial c_{\delta,k} = 2\pi g A_\varphi M_{jk}`,
      :math:`\partial T/\partial c_{R,k} = g A_R B_{R,jk}`,
      :math:`\partial T/\partial c_{g,k} = A B_{g,jk}`;
    * damped normal equations :math:`(J^\top W J + \lambda D)\Delta = -J^\top W r` with
      Moré's scaling :math:`D = \operatorname{diag}` (running maximum of
      :math:`\operatorname{diag} J^\top W J`), solved by Cholesky; Nielsen's update of
      :math:`\lambda` (start :math:`10^{-3}`);
    * bounds :math:`0 \le R(\sigma_j) \le R_{max}` at every wavenumber (a polyhedron in
      :math:`c_R`). The active set is rebuilt at every iteration: while the step would take a
      source's :math:`R` across a bound within the first half of the step, that source joins
      the active set: its row :math:`b_j b_j^\top` enters the system with a large weight and
      target "R on the bound", and the system is re-solved (at most one source per
      reflectivity coefficient); a step blocked later is shortened to the bound. Sources are
      checked against bounds relaxed by 1e-9 and the result is mapped exactly into
      :math:`[0, R_{max}]` at the end (an affine change of :math:`c_R` of that size);
    * stop when an accepted step lowers :math:`F` by at most ``tol`` times :math:`F`, or a
      step is shorter than ``tol * (tol + |theta|)``.

    Three implementations give the same iterates up to summation order: ``generic`` (array
    API; stores the Jacobian, shape (n_items, n_sources, n_params), and solves batched
    systems), ``numba`` (one parallel loop iteration per item, J^T J accumulated source by
    source) and ``cuda`` (one thread per item, same code). Computation is float64 (phases
    reach thousands of radians), or float32 on devices without float64.

    Parameters
    ----------
    y : array, shape (n_items, n_sources)
        Data (finite; give missing values weight 0 and any finite value).
    opd_design, phase_design, reflectivity_design, gain_design : arrays, shape (n_sources, p_*)
        Design matrices :math:`M, B_\psi, B_R, B_g` (each with at least one column).
    params0 : array, shape (n_items, n_params)
        Start, ``n_params = sum(p_*)``. With ``bounds`` it must satisfy the bounds.
    weights : array, shape (n_items, n_sources), optional
        Non-negative weights :math:`w_{ij}` (default 1).
    free : array of bool, shape (n_params,), optional
        Which parameters are fitted; the others keep their start values. Default all.
    model : {"airy", "two_wave"} or int N >= 2
    reflectivity_max : float, default 0.99
        Upper bound :math:`R_{max} < 1`.
    bounds : bool, default True
        Enforce :math:`0 \le R \le R_{max}`.
    max_iter : int, default 100
    tol : float, default 1e-10
    backend : {"auto", "generic", "numba", "cuda"}

    Returns
    -------
    LMResult
        ``params``, ``cost``, ``n_iter``, ``status`` in the namespace and device of ``y``.

    Raises
    ------
    ValueError
        On inconsistent shapes, non-finite inputs, an infeasible start or bad options.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.kernels import levenberg_marquardt
    >>> from subspacelab.optics import transmittance
    >>> s = np.linspace(1.0, 2.0, 200)
    >>> y = transmittance(s, 10.0, 1.0, 0.3, 2.0)[None, :]
    >>> ones = np.ones((200, 1))
    >>> res = levenberg_marquardt(y, s[:, None], ones, ones, ones, np.array([[10.01, 1.1, 0.2, 1.8]]))
    >>> np.round(res.params, 6)
    array([[10. ,  1. ,  0.3,  2. ]])
    """
    names = ["y", "opd_design", "phase_design", "reflectivity_design", "gain_design", "params0", "weights"]
    arrays = [y, opd_design, phase_design, reflectivity_design, gain_design, params0, weights]
    xp, dev = get_namespace(*arrays, names=names)
    order = model_order(model)
    check_param("reflectivity_max", reflectivity_max, "real", low=0.0, high=1.0, closed="neither")
    check_param("bounds", bounds, "bool")
    check_param("max_iter", max_iter, "int", low=0)
    check_param("tol", tol, "real", low=0.0)
    if y.ndim != 2:
        raise ValueError(f"y must be 2-dimensional (n_items, n_sources), got shape {tuple(y.shape)}")
    n_items, n_src = y.shape
    widths = []
    for name, d in zip(names[1:5], arrays[1:5]):
        if d.ndim != 2 or d.shape[0] != n_src or d.shape[1] < 1:
            raise ValueError(f"{name} must have shape (n_sources={n_src}, p >= 1), got {tuple(d.shape)}")
        widths.append(d.shape[1])
    npar = sum(widths)
    if tuple(params0.shape) != (n_items, npar):
        raise ValueError(f"params0 must have shape (n_items={n_items}, n_params={npar}), got {tuple(params0.shape)}")
    if weights is not None and tuple(weights.shape) != (n_items, n_src):
        raise ValueError(f"weights must have the shape of y {tuple(y.shape)}, got {tuple(weights.shape)}")
    f64 = supported_float_dtypes(xp, dev)[0]
    y, params0 = xp.astype(y, f64), xp.astype(params0, f64)
    md, bp, br, bg = (xp.astype(d, f64) for d in arrays[1:5])
    w = None if weights is None else xp.astype(weights, f64)
    for name, a in zip(names, (y, md, bp, br, bg, params0, w)):
        if a is not None and not bool(xp.all(xp.isfinite(a))):
            raise ValueError(f"{name} must not contain NaN or infinity")
    if w is not None and bool(xp.any(w < 0)):
        raise ValueError("weights must be non-negative")
    if free is None:
        free = xp.ones((npar,), dtype=xp.bool, device=dev)
    else:
        free = xp.asarray(free, device=dev)
        if free.shape != (npar,):
            raise ValueError(f"free must have shape (n_params={npar},), got {tuple(free.shape)}")
        free = xp.astype(free, xp.bool)
    o_r = widths[0] + widths[1]
    rmax = float(reflectivity_max)
    if bounds and not bool(xp.all(br[:, 0] == 1.0)):
        raise ValueError("with bounds=True the first column of reflectivity_design must be the constant 1")
    if bounds and n_items:
        r0 = params0[:, o_r : o_r + widths[2]] @ br.T
        if not bool(xp.all((r0 >= 0.0) & (r0 <= rmax))):
            raise ValueError(f"params0 violates the bounds 0 <= R(sigma) <= reflectivity_max={rmax}")
    if n_items == 0:
        return LMResult(params0, xp.zeros((0,), dtype=f64, device=dev), xp.zeros((0,), dtype=xp.int64, device=dev),
                        xp.zeros((0,), dtype=xp.int64, device=dev))
    impl = select_backend(y, backend)
    args = (order, rmax, bool(bounds), int(max_iter), float(tol))
    if impl == "generic":
        out = _generic(y, w, md, bp, br, bg, params0, free, *args, xp=xp, dev=dev)
    elif impl == "numba":
        from ._levenberg_marquardt_numba import levenberg_marquardt_numba

        hy, hw, hmd, hbp, hbr, hbg, hp, hf = to_host(y, w, md, bp, br, bg, params0, free)
        out = from_host(levenberg_marquardt_numba(hy, hw, hmd, hbp, hbr, hbg, hp, hf, *args), xp, dev)
    else:
        from ._levenberg_marquardt_cuda import levenberg_marquardt_cuda

        dy, dw, dmd, dbp, dbr, dbg, dp, df = to_cuda(y, w, md, bp, br, bg, params0, free)
        out = from_cuda(levenberg_marquardt_cuda(dy, dw, dmd, dbp, dbr, dbg, dp, df, *args), y, xp, dev)
    return LMResult(*out)


def _split(theta, widths):
    out, o = [], 0
    for p in widths:
        out.append(theta[:, o : o + p])
        o += p
    return out


def _evaluate(theta, y, sw, md, bp, br, bg, order, widths, xp, with_jac):
    cd, cp, cr, cg = _split(theta, widths)
    phi = 2.0 * math.pi * (cd @ md.T) - cp @ bp.T
    r = cr @ br.T
    g = cg @ bg.T
    a, a_r, a_p = _raw(phi, r, order, xp)
    res = (g * a - y) * sw
    cost = 0.5 * xp.sum(res * res, axis=1)
    if not with_jac:
        return cost, None, None
    ga = g * a_p * sw
    jac = xp.concat(
        [
            (2.0 * math.pi * ga)[:, :, None] * md[None, :, :],
            -ga[:, :, None] * bp[None, :, :],
            (g * a_r * sw)[:, :, None] * br[None, :, :],
            (a * sw)[:, :, None] * bg[None, :, :],
        ],
        axis=2,
    )
    jt = xp.permute_dims(jac, (0, 2, 1))
    h = jt @ jac
    grad = (jt @ res[:, :, None])[:, :, 0]
    return cost, h, grad


def _diag(h, xp):
    return xp.linalg.diagonal(h)


def _generic(y, w, md, bp, br, bg, theta, free, order, rmax, bounded, max_iter, tol, *, xp, dev):
    """Array-API reference: the same iteration as the scalar kernel, vectorised over items."""
    widths = [md.shape[1], bp.shape[1], br.shape[1], bg.shape[1]]
    npar = sum(widths)
    o_r = widths[0] + widths[1]
    n_items = y.shape[0]
    f64 = y.dtype
    sw = xp.ones_like(y) if w is None else xp.sqrt(w)
    eye = xp.eye(npar, dtype=f64, device=dev)
    freef = xp.astype(free, f64)
    fmask = freef[:, None] * freef[None, :]
    fixed_diag = eye * (1.0 - freef)[None, :]
    rb = br  # (n_src, pr)

    cost, h, grad = _evaluate(theta, y, sw, md, bp, br, bg, order, widths, xp, True)
    diag = xp.maximum(_diag(h, xp), xp.asarray(TINY, dtype=f64, device=dev))
    lam = xp.full((n_items,), LAMBDA0, dtype=f64, device=dev)
    nu = xp.full((n_items,), 2.0, dtype=f64, device=dev)
    status = xp.where(cost > 0.0, xp.asarray(0, device=dev), xp.asarray(1, device=dev))
    status = xp.astype(status, xp.int64)
    n_iter = xp.zeros((n_items,), dtype=xp.int64, device=dev)
    zero_i = xp.zeros((n_items,), dtype=xp.int64, device=dev)

    def system(h, grad, diag, lam):
        mat = h * fmask[None, :, :] + (lam[:, None] * diag * freef[None, :])[:, :, None] * eye[None, :, :] + fixed_diag[None, :, :]
        return mat, -grad * freef[None, :]

    def solve(mat, rhs):
        # Cholesky succeeds exactly when the damped matrix is positive definite; items where it
        # fails are treated as failed solves (the scalar kernel does the same).
        ok = xp.ones((n_items,), dtype=xp.bool, device=dev)
        try:
            chol = xp.linalg.cholesky(mat)
        except Exception:  # noqa: BLE001 - libraries raise different errors for non-PD input
            ev = xp.linalg.eigvalsh(mat)
            ok = ev[:, 0] > 0.0
            mat = xp.where(ok[:, None, None], mat, eye[None, :, :])
            chol = xp.linalg.cholesky(mat)
        bad = ~xp.all(xp.isfinite(chol), axis=(1, 2))
        ok = ok & ~bad
        chol = xp.where(ok[:, None, None], chol, eye[None, :, :])
        z = xp.linalg.solve(chol, rhs[:, :, None])
        delta = xp.linalg.solve(xp.permute_dims(chol, (0, 2, 1)), z)[:, :, 0]
        return xp.where(ok[:, None], delta, xp.zeros_like(delta)), ok

    def max_step(theta, delta, act):
        rv = theta[:, o_r : o_r + widths[2]] @ rb.T
        dr = delta[:, o_r : o_r + widths[2]] @ rb.T
        one = xp.ones_like(rv)
        t_lo = xp.where(dr < 0.0, (rv + EPS_B) / xp.where(dr < 0.0, -dr, one), one)
        t_hi = xp.where(dr > 0.0, (rmax + EPS_B - rv) / xp.where(dr > 0.0, dr, one), one)
        t = xp.where(act, one, xp.minimum(t_lo, t_hi))
        jb = xp.argmin(t, axis=1)  # first minimum, as the scalar loop's strict '<'
        alpha = xp.minimum(xp.min(t, axis=1), xp.ones((n_items,), dtype=f64, device=dev))
        return xp.maximum(alpha, xp.zeros_like(alpha)), jb

    n_src = y.shape[1]
    fr = freef[o_r : o_r + widths[2]]
    brf = rb * fr[None, :]
    pad_top = xp.zeros((n_items, o_r, npar), dtype=f64, device=dev)
    after = npar - o_r - widths[2]
    pad_l = xp.zeros((n_items, widths[2], o_r), dtype=f64, device=dev)
    pad_r = xp.zeros((n_items, widths[2], after), dtype=f64, device=dev)
    pad_bot = xp.zeros((n_items, after, npar), dtype=f64, device=dev)
    src = xp.arange(n_src, device=dev)
    pad_v1 = xp.zeros((n_items, o_r), dtype=f64, device=dev)
    pad_v2 = xp.zeros((n_items, after), dtype=f64, device=dev)

    def penalty(jb, theta, diag, use):
        """Hold source jb of each item (where ``use``) on its nearest bound: PENALTY-weighted
        (b_j^T delta - target)^2, target = bound - R(sigma_j); returns (matrix, rhs) terms."""
        onehot = (src[None, :] == jb[:, None]) & use[:, None]
        oh = xp.astype(onehot, f64)
        bj = oh @ brf  # (B, pr): row jb of the free part of Br
        rv = xp.sum((oh @ rb) * theta[:, o_r : o_r + widths[2]], axis=1)
        target = xp.where(rv < 0.5 * rmax, -rv, rmax - rv)
        dr_ = diag[:, o_r : o_r + widths[2]]
        nrm = xp.sum(bj * bj / dr_, axis=1)
        rho = xp.where(nrm > 0.0, PENALTY / xp.where(nrm > 0.0, nrm, xp.ones_like(nrm)), xp.zeros_like(nrm))
        pen = rho[:, None, None] * (bj[:, :, None] * bj[:, None, :])
        mid = xp.concat([pad_l, pen, pad_r], axis=2)
        prhs = xp.concat([pad_v1, (rho * target)[:, None] * bj, pad_v2], axis=1)
        return xp.concat([pad_top, mid, pad_bot], axis=1), prhs, onehot

    for _ in range(max_iter):
        active = status == 0
        if not bool(xp.any(active)):
            break
        n_iter = n_iter + xp.astype(active, xp.int64)
        mat, rhs = system(h, grad, diag, lam)
        delta, ok = solve(mat, rhs)
        alpha = xp.ones((n_items,), dtype=f64, device=dev)
        if bounded:
            # active set rebuilt at every iteration (same rule as the scalar kernel)
            act = xp.zeros((n_items, n_src), dtype=xp.bool, device=dev)
            alpha, jb = max_step(theta, delta, act)
            pen = xp.zeros_like(mat)
            prhs = xp.zeros_like(rhs)
            for _ in range(widths[2]):
                blocked = ok & (alpha <= ACTIVE_T)
                if not bool(xp.any(blocked)):
                    break
                pm, pr_, oh = penalty(jb, theta, diag, blocked)
                pen, prhs, act = pen + pm, prhs + pr_, act | oh
                delta2, ok2 = solve(mat + pen, rhs + prhs)
                alpha2, jb2 = max_step(theta, delta2, act)
                delta = xp.where(blocked[:, None], delta2, delta)
                alpha = xp.where(blocked, alpha2, alpha)
                jb = xp.where(blocked, jb2, jb)
                ok = xp.where(blocked, ok2, ok)
        gd = xp.sum(grad * delta, axis=1)
        dhd = xp.sum(delta * (h @ delta[:, :, None])[:, :, 0], axis=1)
        step = alpha * xp.sqrt(xp.sum(delta * delta, axis=1))
        small = (alpha == 1.0) & (step <= tol * (tol + xp.sqrt(xp.sum(theta * theta, axis=1))))
        trial = theta + alpha[:, None] * delta
        new_cost, _, _ = _evaluate(trial, y, sw, md, bp, br, bg, order, widths, xp, False)
        accept = active & ok & (new_cost < cost)
        reject = active & ~accept
        pred = -alpha * gd - 0.5 * alpha * alpha * dhd
        rho = xp.where(pred > 0.0, (cost - new_cost) / xp.where(pred > 0.0, pred, xp.ones_like(pred)), xp.ones_like(pred))
        f = 2.0 * rho - 1.0
        f = 1.0 - f * f * f
        lam_acc = lam * xp.maximum(f, xp.full_like(f, 1.0 / 3.0))
        lam = xp.where(accept, lam_acc, xp.where(reject, lam * nu, lam))
        nu = xp.where(accept, xp.full_like(nu, 2.0), xp.where(reject, nu * 2.0, nu))
        drop = cost - new_cost
        old = cost
        theta = xp.where(accept[:, None], trial, theta)
        if bool(xp.any(accept)):
            c2, h2, g2 = _evaluate(theta, y, sw, md, bp, br, bg, order, widths, xp, True)
            cost = xp.where(accept, c2, cost)
            h = xp.where(accept[:, None, None], h2, h)
            grad = xp.where(accept[:, None], g2, grad)
            diag = xp.where(accept[:, None], xp.maximum(diag, _diag(h2, xp)), diag)
        conv_acc = accept & ((drop <= tol * old) | small | ~(cost > 0.0))
        conv_rej = reject & ok & small
        stall = reject & ~conv_rej & (lam > LAMBDA_MAX)
        status = xp.where(conv_acc | conv_rej, xp.ones_like(status), status)
        status = xp.where(stall, xp.full_like(status, 2), status)
    if bounded:
        # remove the at most EPS_B-sized violation the steps may leave
        rv = theta[:, o_r : o_r + widths[2]] @ rb.T
        lo = xp.minimum(xp.min(rv, axis=1), xp.zeros((n_items,), dtype=f64, device=dev))
        hi = xp.maximum(xp.max(rv, axis=1), xp.full((n_items,), rmax, dtype=f64, device=dev))
        # affine map of [min(lo, 0), max(hi, rmax)] onto [0, rmax] (identity when feasible)
        kappa = rmax / (hi - lo)
        col = xp.astype(xp.arange(npar, device=dev) == o_r, f64)
        in_r = xp.astype((xp.arange(npar, device=dev) >= o_r) & (xp.arange(npar, device=dev) < o_r + widths[2]), f64)
        scale = 1.0 + (kappa[:, None] - 1.0) * in_r[None, :]
        theta = theta * scale - (kappa * lo)[:, None] * col[None, :]
        cost, _, _ = _evaluate(theta, y, sw, md, bp, br, bg, order, widths, xp, False)
    status = xp.where(status < 0, zero_i, status)
    return theta, cost, n_iter, status
