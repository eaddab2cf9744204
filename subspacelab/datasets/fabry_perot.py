r"""Fabry–Perot (ImSPOC) calibration data: the packaged real acquisitions and simulators.

* :func:`load_imspoc` reads the calibration acquisitions of four ImSPOC-family prototypes
  shipped with subspacelab (from the public repository of Picone et al. 2023, MIT licence,
  (c) 2023 Daniele Picone; the notice is ``data/imspoc/LICENSE-data.txt``).
* :func:`make_fabry_perot_acquisition` simulates calibration data from known parameters.
* :func:`load_earthlib_spectra` reads real reflectance spectra from the ``earthlib`` wheel and
  :func:`simulate_interferograms` turns spectra into interferograms through a transfer matrix.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re

import numpy as np
from sklearn.utils import Bunch

from .._backend import check_random_state
from ..optics import transmittance

__all__ = [
    "IMSPOC_PROTOTYPES",
    "load_earthlib_spectra",
    "load_imspoc",
    "make_fabry_perot_acquisition",
    "simulate_interferograms",
]

IMSPOC_PROTOTYPES = ("imagaz_1", "imspoc_uv_1", "imspoc_uv_2", "wfai_1")
_DATA = os.path.join(os.path.dirname(__file__), "data", "imspoc")


def load_imspoc(name):
    """Load the calibration acquisition of one ImSPOC prototype (packaged, no download).

    Each prototype was illuminated by a monochromator at known wavenumbers; every array is
    already reduced to one value per interferometer (sub-image) and source.

    Parameters
    ----------
    name : {"imagaz_1", "imspoc_uv_1", "imspoc_uv_2", "wfai_1"}

    Returns
    -------
    Bunch
        ``data`` (n_interferometers, n_sources): centre-spot signal, the regression target;
        ``mean``: neighbourhood mean (smoother, for the initialisation); ``flat``: flat field
        (source power per wavenumber; all ones for ``wfai_1``); ``wavenumbers`` (n_sources,)
        in µm⁻¹; ``opd_step``: nominal OPD step (µm), so the nominal staircase is
        ``opd_init = opd_step * arange(n_interferometers)`` (only imspoc_uv_2 has a device
        file confirming a zero start; elsewhere the start 0 is an assumption);
        ``opd_span``: the authors' search half-width relative to the Nyquist OPD for this
        prototype; ``options``, ``characterization_options`` (the authors' JSON), ``device``
        (layout dict or None), ``name`` and ``DESCR``. Arrays are C-contiguous float64.

    Examples
    --------
    >>> from subspacelab.datasets import load_imspoc
    >>> d = load_imspoc("imspoc_uv_2")
    >>> d.data.shape, d.wavenumbers.shape, d.opd_step
    ((319, 451), (451,), 0.175)
    """
    if name not in IMSPOC_PROTOTYPES:
        raise ValueError(f"name must be one of {IMSPOC_PROTOTYPES}, got {name!r}")
    root = os.path.join(_DATA, "acquisitions", name)

    def arr(f):
        return np.ascontiguousarray(np.load(os.path.join(root, f), allow_pickle=False), dtype=np.float64)

    with open(os.path.join(root, "options.json")) as fh:
        options = json.load(fh)
    with open(os.path.join(_DATA, "characterization_options", f"{name}_characterization_options.json")) as fh:
        char = json.load(fh)
    dev_path = os.path.join(_DATA, "device", f"{name}.json")
    device = None
    if os.path.exists(dev_path):
        with open(dev_path) as fh:
            device = json.load(fh)
    stages = char.get("__root__", char)
    span = float(stages[0]["parameters"]["opd"]["relative_span"])
    rmin = float(stages[0]["parameters"]["opd"]["relative_minimum"])
    data = arr("data.npy")
    return Bunch(
        data=data,
        mean=arr("mean.npy"),
        flat=arr("norm.npy"),
        wavenumbers=arr("central_wavenumbers.npy"),
        opd_step=round(float(options["opd_step"]), 10),
        opd_span=span,
        opd_range=(rmin, 1.0),
        options=options,
        characterization_options=char,
        device=device,
        name=name,
        DESCR=(
            f"ImSPOC prototype {name}: {data.shape[0]} interferometers x {data.shape[1]} monochromatic "
            "sources. Data from github.com/Danaroth83/irca (MIT licence, (c) 2023 Daniele Picone); "
            "cite Picone et al., Optics Express 31(14) 23066 (2023), doi:10.1364/OE.491698."
        ),
    )


def make_fabry_perot_acquisition(
    n_interferometers=64,
    n_sources=451,
    *,
    wavenumber_range=(1.0, 2.85),
    opd_step=None,
    opd_offset=1.0,
    opd_bow=0.5,
    opd_jitter=0.2,
    reflectivity=0.25,
    reflectivity_spread=0.02,
    reflectivity_slope=0.05,
    gain_spread=0.3,
    noise=0.01,
    mean_noise=None,
    model="airy",
    irregular=False,
    subimage_shape=None,
    fov=0.0,
    random_state=None,
):
    r"""Simulate a monochromatic calibration of a Fabry–Perot interferometer array.

    Ground truth (spec irca.md section 5.1): a staircase
    :math:`\delta_i = \delta_0 + \Delta\delta\,i + b\,(2u_i - 1)^2 + \epsilon_i`
    (:math:`u_i = i/(n-1)`, bow :math:`b`, jitter :math:`\epsilon_i \sim N(0, s^2)`),
    :math:`\psi_i \sim U(0, 2\pi)`, :math:`R_i(\sigma) = R_{0,i} + R_1(\sigma - \bar\sigma)` with
    :math:`R_{0,i} \sim N(R, \text{spread}^2)`, and
    :math:`g_i(\sigma) = s_i (1 + 0.3\sigma - 0.1\sigma^2)` with
    :math:`\log s_i \sim N(0, \text{gain\_spread}^2)`. Data are the scaled transmittance
    :math:`T_{ij}` times :math:`(1 + \text{noise}\cdot\varepsilon_{ij})` (multiplicative
    Gaussian noise). The true R is linear and the true gain quadratic in :math:`\sigma`, so a
    fit with reflectivity degree >= 1 and gain degree >= 2 can recover them exactly.

    With ``subimage_shape=(h, w)`` every interferometer becomes an h x w sub-image whose pixel
    :math:`(r, c)` sees :math:`\delta_i\cos\theta(r, c)`, :math:`\theta` growing linearly with
    the distance to the sub-image centre up to ``fov`` degrees at the corner, and a vignetted
    gain :math:`g (1 - 0.1\rho^2)` (:math:`\rho` the normalised distance): a per-pixel
    calibration set of shape (n, h, w, n_sources).

    Parameters
    ----------
    n_interferometers, n_sources : int
    wavenumber_range : pair of float
        Source wavenumbers (µm⁻¹), uniform unless ``irregular``.
    opd_step : float, optional
        :math:`\Delta\delta` (µm); default :math:`1/(2\sigma_{max})` (the Nyquist step).
    opd_offset, opd_bow, opd_jitter : float
        :math:`\delta_0`, :math:`b` and :math:`s` in µm.
    reflectivity, reflectivity_spread, reflectivity_slope : float
        :math:`R`, its spread, and :math:`R_1` (per µm⁻¹).
    gain_spread : float
    noise : float
        Relative Gaussian noise of ``data``.
    mean_noise : float, optional
        Relative noise of ``mean`` (default ``noise / 3``: a smoother neighbourhood mean).
    model : {"airy", "two_wave"} or int
    irregular : bool
        Draw sorted uniform random wavenumbers instead of a regular grid.
    subimage_shape : pair of int, optional
    fov : float
        Field angle at the sub-image corner, degrees.
    random_state : None, int or numpy.random.Generator

    Returns
    -------
    Bunch
        ``data``, ``mean``, ``clean`` (noiseless), ``flat`` (gain shape, shape (n_sources,)),
        ``wavenumbers``, ``opd``, ``phase_shift``, ``reflectivity`` and ``gain`` (values at
        the wavenumbers, shape like data), ``opd_step``, ``opd_nominal``
        (:math:`\delta_0 + \Delta\delta\,i`; ``opd_init=opd_nominal`` gives the calibrator the
        nominal staircase), ``opd_max`` (:math:`1/(2\overline{\Delta\sigma})`).

    Raises
    ------
    ValueError
        If the staircase would exceed the Nyquist OPD (aliasing) or a parameter is invalid.

    Examples
    --------
    >>> from subspacelab.datasets import make_fabry_perot_acquisition
    >>> acq = make_fabry_perot_acquisition(8, 100, random_state=0)
    >>> acq.data.shape, acq.wavenumbers.shape
    ((8, 100), (100,))
    """
    rng = check_random_state(random_state)
    n, N = int(n_interferometers), int(n_sources)
    if n < 1 or N < 2:
        raise ValueError(f"need n_interferometers >= 1 and n_sources >= 2, got {n} and {N}")
    lo, hi = map(float, wavenumber_range)
    if not 0.0 < lo < hi:
        raise ValueError(f"wavenumber_range must satisfy 0 < low < high, got {wavenumber_range}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    if irregular:
        sigma = np.sort(rng.uniform(lo, hi, N))
        sigma[0], sigma[-1] = lo, hi
    else:
        sigma = np.linspace(lo, hi, N)
    opd_max = (N - 1) / (2.0 * (hi - lo))
    step = 1.0 / (2.0 * hi) if opd_step is None else float(opd_step)
    idx = np.arange(n, dtype=float)
    u = idx / max(n - 1, 1)
    nominal = opd_offset + step * idx
    opd = nominal + opd_bow * (2.0 * u - 1.0) ** 2 + opd_jitter * rng.standard_normal(n)
    if opd.max() >= opd_max or opd.min() <= 0.0:
        raise ValueError(
            f"the simulated OPDs span [{opd.min():.3g}, {opd.max():.3g}] µm, outside (0, {opd_max:.3g}) "
            "(the Nyquist OPD of the source grid): reduce n_interferometers or opd_step, or add sources"
        )
    psi = rng.uniform(0.0, 2.0 * math.pi, n)
    r0 = reflectivity + reflectivity_spread * rng.standard_normal(n)
    centre = 0.5 * (lo + hi)
    R = r0[:, None] + reflectivity_slope * (sigma[None, :] - centre)
    if R.min() < 0.0 or R.max() >= 0.95:
        raise ValueError("the simulated reflectivity leaves [0, 0.95): reduce its spread or slope")
    shape_g = 1.0 + 0.3 * sigma - 0.1 * sigma**2
    scale = np.exp(gain_spread * rng.standard_normal(n))
    G = scale[:, None] * shape_g[None, :]
    opd_full, psi_full, R_full, G_full = opd[:, None], psi[:, None], R, G
    if subimage_shape is not None:
        h, w = (int(v) for v in subimage_shape)
        rr, cc = np.meshgrid(np.arange(h) - (h - 1) / 2.0, np.arange(w) - (w - 1) / 2.0, indexing="ij")
        rho = np.hypot(rr, cc)
        rho = rho / max(rho.max(), 1e-12)
        theta = np.deg2rad(fov) * rho
        opd_full = opd[:, None, None, None] * np.cos(theta)[None, :, :, None]
        psi_full = psi[:, None, None, None]
        R_full = np.broadcast_to(R[:, None, None, :], (n, h, w, N))
        G_full = G[:, None, None, :] * (1.0 - 0.1 * rho**2)[None, :, :, None]
    clean = transmittance(sigma, opd_full, psi_full, R_full, G_full, model=model)
    mn = noise / 3.0 if mean_noise is None else float(mean_noise)
    data = clean * (1.0 + noise * rng.standard_normal(clean.shape))
    mean = clean * (1.0 + mn * rng.standard_normal(clean.shape))
    out_opd = opd if subimage_shape is None else opd_full[..., 0]
    return Bunch(
        data=data,
        mean=mean,
        clean=clean,
        flat=shape_g,
        wavenumbers=sigma,
        opd=out_opd,
        phase_shift=psi if subimage_shape is None else np.broadcast_to(psi[:, None, None], out_opd.shape).copy(),
        reflectivity=np.broadcast_to(R_full, clean.shape).copy(),
        gain=np.broadcast_to(G_full, clean.shape).copy(),
        opd_step=step,
        opd_nominal=nominal,
        opd_max=opd_max,
    )


def _earthlib_dir():
    spec = importlib.util.find_spec("earthlib")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "load_earthlib_spectra needs the earthlib wheel (data only): pip install --no-deps earthlib"
        )
    return os.path.join(spec.submodule_search_locations[0], "data")


def load_earthlib_spectra(n_spectra=None, *, wavenumbers=None, random_state=None):
    r"""Real reflectance spectra from the earthlib spectral library (read as files, not imported).

    earthlib 1.1.0 (MIT) ships 7261 spectra x 180 bands over 0.40-2.45 µm (2000 of them
    PROSAIL simulations, the rest measured). The package is found with
    ``importlib.util.find_spec`` and never imported.

    Parameters
    ----------
    n_spectra : int, optional
        Draw this many spectra at random (without replacement); default all.
    wavenumbers : array, optional
        Resample (linear interpolation in wavelength) onto these wavenumbers in µm⁻¹, which
        must lie within 1/2.45 - 1/0.40 µm⁻¹.
    random_state : None, int or numpy.random.Generator

    Returns
    -------
    Bunch
        ``spectra`` (n, n_bands) float64, ``wavelengths`` (µm), ``wavenumbers`` (µm⁻¹, of the
        returned columns) and ``names``.

    Raises
    ------
    ImportError
        When earthlib is not installed.

    Examples
    --------
    >>> from subspacelab.datasets import load_earthlib_spectra
    >>> lib = load_earthlib_spectra(5, random_state=0)
    >>> lib.spectra.shape, len(lib.names)
    ((5, 180), 5)
    """
    root = _earthlib_dir()
    with open(os.path.join(root, "spectra.sli.hdr")) as fh:
        hdr = fh.read()
    wl = np.array(re.search(r"wavelength\s*=\s*\{([^}]*)\}", hdr).group(1).split(","), dtype=float)
    names = [s.strip() for s in re.search(r"spectra names\s*=\s*\{([^}]*)\}", hdr).group(1).split(",")]
    S = np.fromfile(os.path.join(root, "spectra.sli"), dtype="<f4").reshape(-1, wl.size).astype(np.float64)
    idx = np.arange(S.shape[0])
    if n_spectra is not None:
        rng = check_random_state(random_state)
        idx = np.sort(rng.choice(S.shape[0], size=int(n_spectra), replace=False))
    S = S[idx]
    names = [names[i] for i in idx]
    if wavenumbers is None:
        return Bunch(spectra=S, wavelengths=wl, wavenumbers=1.0 / wl, names=names)
    s = np.asarray(wavenumbers, dtype=float)
    lam = 1.0 / s
    if lam.min() < wl.min() or lam.max() > wl.max():
        raise ValueError(f"wavenumbers must lie in [{1 / wl.max():.4f}, {1 / wl.min():.4f}] µm⁻¹ for earthlib spectra")
    out = np.stack([np.interp(lam, wl, row) for row in S])
    return Bunch(spectra=out, wavelengths=lam, wavenumbers=s, names=names)


def simulate_interferograms(transfer_matrix, spectra, *, noise=0.0, random_state=None):
    r"""Interferograms :math:`Y = X A^\top + N` of spectra ``X`` through a transfer matrix ``A``.

    Parameters
    ----------
    transfer_matrix : array, shape (n_interferometers, n_wavenumbers)
        :math:`A`, e.g. ``SpectralReconstructor.transfer_matrix_`` or a calibrator's
        :meth:`~subspacelab.IRCACalibrator.predict` on the spectra's wavenumbers.
    spectra : array, shape (n_pixels, n_wavenumbers)
    noise : float
        Gaussian noise with standard deviation ``noise`` times the RMS of each clean
        interferogram (relative noise level).
    random_state : None, int or numpy.random.Generator

    Returns
    -------
    Bunch
        ``interferograms`` (n_pixels, n_interferometers) and ``clean``.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.datasets import simulate_interferograms
    >>> rng = np.random.default_rng(0)
    >>> A, X = rng.uniform(size=(4, 30)), rng.uniform(size=(10, 30))
    >>> sim = simulate_interferograms(A, X)
    >>> sim.interferograms.shape, bool(np.allclose(sim.interferograms, X @ A.T))
    ((10, 4), True)
    """
    A = np.asarray(transfer_matrix, dtype=float)
    X = np.atleast_2d(np.asarray(spectra, dtype=float))
    if A.ndim != 2 or X.shape[1] != A.shape[1]:
        raise ValueError(f"spectra have {X.shape[1]} wavenumbers but the transfer matrix has {A.shape[1]} columns")
    clean = X @ A.T
    rng = check_random_state(random_state)
    rms = np.sqrt(np.mean(clean**2, axis=1, keepdims=True))
    return Bunch(interferograms=clean + noise * rms * rng.standard_normal(clean.shape), clean=clean)
