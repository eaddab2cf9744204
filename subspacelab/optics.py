r"""Fabry–Perot transmittance models with wavenumber-dependent parameters.

A Fabry–Perot cavity of optical path difference :math:`\delta` (µm) seen at wavenumber
:math:`\sigma` (µm⁻¹, :math:`\sigma = 1/\lambda`) has the phase difference

.. math::

    \varphi(\sigma) = 2\pi\,\sigma\,\delta(\sigma) - \psi(\sigma),

with :math:`\psi` an extra phase shift (reflection phase of the faces) and
:math:`\delta = 2ne\cos\theta` for a cavity of thickness :math:`e` and index :math:`n` (the
authors' device files give :math:`e` in nm and use :math:`\delta = 2e`, i.e. :math:`n = 1`, an
air gap: an assumption their repository does not state). With face reflectivity
:math:`R \in [0, 1)` and gain :math:`g` the *scaled* transmittances used here are normalised so
that their mean over one fringe period equals :math:`g` (Picone et al. 2023):

* Airy (infinitely many waves, any finesse)

  .. math:: T = g\,\frac{1 - R^2}{1 + R^2 - 2R\cos\varphi}
     = g\Big[1 + 2\sum_{n\ge 1} R^n \cos n\varphi\Big];

* N-wave (the first N reflected waves interfere)

  .. math:: T = g\,\frac{\big|\sum_{k=0}^{N-1} R^k e^{ik\varphi}\big|^2}{\sum_{k=0}^{N-1} R^{2k}};

* two-wave (N = 2, low finesse): :math:`T = g\,[1 + \tfrac{2R}{1+R^2}\cos\varphi]`.

The N-wave normalisation here is the exact mean :math:`\sum_k R^{2k} = (1-R^{2N})/(1-R^2)`; the
authors' code uses :math:`1 + R^{2N}` in place of :math:`1 - R^{2N}` (a sign slip we do not
reproduce). Every parameter may depend on :math:`\sigma` through a polynomial, see
:func:`polynomial_basis`.

All functions are written against the array API standard and run in the namespace and on the
device of their inputs. Phases reach :math:`2\pi\sigma\delta \approx 2\cdot 10^3` rad on the
real devices, so they are formed in float64 (float32 input is promoted for the phase and the
result cast back): float32 would lose about :math:`2\cdot 10^{-4}` rad before any arithmetic.
"""

from __future__ import annotations

import math
import numbers

from ._backend import get_namespace, supported_float_dtypes

__all__ = [
    "coefficient_of_finesse",
    "finesse",
    "model_order",
    "phase_difference",
    "polynomial_basis",
    "transmittance",
    "transmittance_derivatives",
]

BASES = ("chebyshev", "power")


def model_order(model):
    """Integer code of a transmittance model: 0 for Airy, N >= 2 for the N-wave model.

    ``"airy"`` -> 0, ``"two_wave"`` -> 2, an int N >= 2 -> N (``N = 2`` is the two-wave model).

    Raises
    ------
    ValueError
        For an unknown name or an integer below 2.
    TypeError
        For anything that is neither a str nor an int.

    Examples
    --------
    >>> from subspacelab.optics import model_order
    >>> model_order("airy"), model_order("two_wave"), model_order(5)
    (0, 2, 5)
    """
    if isinstance(model, str):
        if model == "airy":
            return 0
        if model == "two_wave":
            return 2
        raise ValueError(f"model must be 'airy', 'two_wave' or an int N >= 2, got {model!r}")
    if isinstance(model, bool) or not isinstance(model, numbers.Integral):
        raise TypeError(f"model must be 'airy', 'two_wave' or an int N >= 2, got {type(model).__name__}")
    if model < 2:
        raise ValueError(f"an N-wave model needs N >= 2, got model={model}")
    return int(model)


def _normalise(sigma, domain, basis):
    if basis == "power":
        return sigma
    lo, hi = float(domain[0]), float(domain[1])
    if not hi > lo:
        raise ValueError(f"domain must be an increasing pair (low, high), got {tuple(domain)}")
    return (2.0 * sigma - (lo + hi)) / (hi - lo)


def polynomial_basis(wavenumbers, degree, *, basis="chebyshev", domain=None):
    r"""Design matrix :math:`B_{jk} = b_k(\sigma_j)` of a polynomial basis, shape (n, degree + 1).

    ``basis="chebyshev"`` uses Chebyshev polynomials :math:`T_k(x)` of the normalised wavenumber
    :math:`x = (2\sigma - \sigma_{lo} - \sigma_{hi}) / (\sigma_{hi} - \sigma_{lo}) \in [-1, 1]`
    (well conditioned); ``basis="power"`` uses raw powers :math:`\sigma^k` of the wavenumber in
    µm⁻¹, as the authors' code does (its coefficients for degree 5 reach :math:`10^{12}` with
    alternating signs). In both bases the first column is the constant 1.

    Parameters
    ----------
    wavenumbers : array, shape (n,)
        Wavenumbers in µm⁻¹.
    degree : int
        Polynomial degree, >= 0.
    basis : {"chebyshev", "power"}
    domain : pair of float, optional
        :math:`(\sigma_{lo}, \sigma_{hi})` mapped to [-1, 1] by the Chebyshev basis; defaults to
        the range of ``wavenumbers``. Ignored by the power basis.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.optics import polynomial_basis
    >>> polynomial_basis(np.array([1.0, 1.5, 2.0]), 2)
    array([[ 1., -1.,  1.],
           [ 1.,  0., -1.],
           [ 1.,  1.,  1.]])
    """
    xp, _ = get_namespace(wavenumbers, names=["wavenumbers"])
    if basis not in BASES:
        raise ValueError(f"basis must be one of {BASES}, got {basis!r}")
    if isinstance(degree, bool) or not isinstance(degree, numbers.Integral) or degree < 0:
        raise ValueError(f"degree must be a non-negative int, got {degree!r}")
    if wavenumbers.ndim != 1:
        raise ValueError(f"wavenumbers must be 1-dimensional, got shape {tuple(wavenumbers.shape)}")
    if domain is None:
        domain = (float(xp.min(wavenumbers)), float(xp.max(wavenumbers))) if wavenumbers.shape[0] else (0.0, 1.0)
        if domain[1] <= domain[0]:
            domain = (domain[0] - 0.5, domain[0] + 0.5)
    x = _normalise(wavenumbers, domain, basis)
    cols = [xp.ones_like(x)]
    if degree >= 1:
        cols.append(x)
    for k in range(2, degree + 1):
        cols.append(2.0 * x * cols[k - 1] - cols[k - 2] if basis == "chebyshev" else cols[k - 1] * x)
    return xp.stack(cols, axis=-1)


def phase_difference(wavenumbers, opd, phase_shift=0.0):
    r"""Phase difference :math:`\varphi = 2\pi\sigma\delta - \psi` in float64 (broadcasting).

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.optics import phase_difference
    >>> bool(np.isclose(phase_difference(np.array([2.0]), np.array([0.25])), np.pi))  # 2 pi sigma delta
    True
    """
    arrays = [a for a in (wavenumbers, opd, phase_shift) if not isinstance(a, numbers.Number)]
    xp, dev = get_namespace(*arrays)
    f64 = supported_float_dtypes(xp, dev)[0]
    s, d, p = (a if isinstance(a, numbers.Number) else xp.astype(a, f64) for a in (wavenumbers, opd, phase_shift))
    return 2.0 * math.pi * s * d - p


def _check_reflectivity(r, xp):
    if isinstance(r, numbers.Number):
        bad = not (0.0 <= r < 1.0)
    else:
        bad = not bool(xp.all((r >= 0.0) & (r < 1.0)))
    if bad:
        raise ValueError("reflectivity must lie in [0, 1) (use reflectivity >= 0 and a phase shift of pi for a sign flip)")


def _raw(phi, r, order, xp):
    """Scaled response A (mean 1 over a fringe) and its derivatives dA/dR, dA/dphi."""
    if order == 0:
        c, s = xp.cos(phi), xp.sin(phi)
        d = 1.0 + r * r - 2.0 * r * c
        a = (1.0 - r * r) / d
        a_r = (-2.0 * r * d - (1.0 - r * r) * (2.0 * r - 2.0 * c)) / (d * d)
        a_phi = -2.0 * r * (1.0 - r * r) * s / (d * d)
        return a, a_r, a_phi
    # N-wave: S = sum_k R^k e^{ik phi}; A = |S|^2 / Q, Q = sum_k R^{2k}
    cs = xp.zeros_like(phi + r)
    sn = xp.zeros_like(cs)
    dcs_r = xp.zeros_like(cs)
    dsn_r = xp.zeros_like(cs)
    dcs_p = xp.zeros_like(cs)
    dsn_p = xp.zeros_like(cs)
    q = xp.zeros_like(cs)
    dq = xp.zeros_like(cs)
    for k in range(order):
        rk = r**k if k else xp.ones_like(cs)
        ck, sk = xp.cos(k * phi), xp.sin(k * phi)
        cs = cs + rk * ck
        sn = sn + rk * sk
        if k:
            rk1 = k * r ** (k - 1)
            dcs_r = dcs_r + rk1 * ck
            dsn_r = dsn_r + rk1 * sk
            dcs_p = dcs_p - k * rk * sk
            dsn_p = dsn_p + k * rk * ck
            dq = dq + 2.0 * k * r ** (2 * k - 1)
        q = q + rk * rk
    m2 = cs * cs + sn * sn
    a = m2 / q
    a_r = 2.0 * (cs * dcs_r + sn * dsn_r) / q - m2 * dq / (q * q)
    a_phi = 2.0 * (cs * dcs_p + sn * dsn_p) / q
    return a, a_r, a_phi


def transmittance(wavenumbers, opd, phase_shift=0.0, reflectivity=0.0, gain=1.0, *, model="airy"):
    r"""Scaled Fabry–Perot transmittance :math:`T(\sigma)` (module docstring for the formulas).

    All array arguments broadcast against each other; parameters that depend on the wavenumber
    are passed evaluated on the wavenumbers (e.g. ``polynomial_basis(s, 5) @ coef``).

    Parameters
    ----------
    wavenumbers : array or float
        :math:`\sigma` in µm⁻¹.
    opd : array or float
        Optical path difference :math:`\delta` in µm (:math:`\delta = 2ne\cos\theta`).
    phase_shift : array or float, default 0
        :math:`\psi` in radians.
    reflectivity : array or float, default 0
        :math:`R`, in [0, 1).
    gain : array or float, default 1
        :math:`g`, the mean of :math:`T` over one fringe period.
    model : {"airy", "two_wave"} or int N >= 2
        Finesse regime (:func:`model_order`).

    Returns
    -------
    array
        :math:`T` in the broadcast shape, float64 where the device has it (float32 inputs get a
        float64 result too, because the phase has to be float64).

    Raises
    ------
    ValueError
        If the reflectivity leaves [0, 1), or for an unknown model.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.optics import transmittance
    >>> s = np.linspace(1.0, 2.0, 5)
    >>> np.round(transmittance(s, opd=2.0, reflectivity=0.3), 4)
    array([1.8571, 0.5385, 1.8571, 0.5385, 1.8571])
    """
    order = model_order(model)
    phi = phase_difference(wavenumbers, opd, phase_shift)
    xp, _ = get_namespace(phi)
    _check_reflectivity(reflectivity, xp)
    r = reflectivity if isinstance(reflectivity, numbers.Number) else xp.astype(reflectivity, phi.dtype)
    a, _, _ = _raw(phi, r, order, xp)
    g = gain if isinstance(gain, numbers.Number) else xp.astype(gain, phi.dtype)
    return g * a


def transmittance_derivatives(phase, reflectivity, *, model="airy"):
    r"""Scaled response :math:`A(R, \varphi)` (so that :math:`T = gA`) and its partial derivatives.

    For the Airy model, with :math:`D = 1 + R^2 - 2R\cos\varphi`,

    .. math::

        A = \frac{1-R^2}{D},\quad
        \frac{\partial A}{\partial R} = \frac{-2RD - (1-R^2)(2R - 2\cos\varphi)}{D^2},\quad
        \frac{\partial A}{\partial\varphi} = \frac{-2R(1-R^2)\sin\varphi}{D^2}.

    For the N-wave model the derivatives of :math:`|S|^2/Q` follow from
    :math:`S = \sum_k R^k e^{ik\varphi}` and :math:`Q = \sum_k R^{2k}`.
    These are the building blocks of the analytic Jacobian used by
    :func:`subspacelab.kernels.levenberg_marquardt`. Unlike :func:`transmittance` this function
    does not check that :math:`R \in [0, 1)` (the formulas are smooth across 0).

    Returns
    -------
    (A, dA_dR, dA_dphi) : tuple of arrays

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.optics import transmittance_derivatives
    >>> A, dA_dR, dA_dphi = transmittance_derivatives(np.array([0.0, np.pi]), 0.5)
    >>> np.round(A, 6)  # (1 + R) / (1 - R) at a fringe maximum, its inverse at a minimum
    array([3.      , 0.333333])
    >>> np.abs(np.round(dA_dphi, 6))  # stationary at both
    array([0., 0.])
    """
    order = model_order(model)
    xp, _ = get_namespace(*(a for a in (phase, reflectivity) if not isinstance(a, numbers.Number)))
    return _raw(phase, reflectivity, order, xp)


def coefficient_of_finesse(reflectivity):
    r"""Coefficient of finesse :math:`F = 4R/(1-R)^2`.

    Examples
    --------
    >>> from subspacelab.optics import coefficient_of_finesse
    >>> float(coefficient_of_finesse(0.5))
    8.0
    """
    return 4.0 * reflectivity / (1.0 - reflectivity) ** 2


def finesse(reflectivity):
    r"""Finesse :math:`\mathcal{F} = \pi\sqrt{R}/(1-R)` (array-API, elementwise).

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.optics import finesse
    >>> round(float(finesse(np.asarray(0.25))), 4)
    2.0944
    """
    if isinstance(reflectivity, numbers.Number):
        return math.pi * math.sqrt(reflectivity) / (1.0 - reflectivity)
    xp, _ = get_namespace(reflectivity)
    return math.pi * xp.sqrt(reflectivity) / (1.0 - reflectivity)
