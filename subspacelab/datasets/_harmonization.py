r"""Data for image harmonisation: MNI152 axial slices, a spin-echo MR phantom with two
physically different "scanners", and the seeded, composable :class:`DomainShift` generator.

Spec diffusion_flow.md §4.5. Everything is NumPy (data generation, not estimation).
"""

from __future__ import annotations

import math

import numpy as np

from .._backend import check_random_state
from .._validation import check_param
from ._medical import load_mni152_t1, resize_image

__all__ = [
    "SCANNERS",
    "SHIFT_KINDS",
    "DomainShift",
    "load_mni152_axial_slices",
    "make_spin_echo_phantoms",
]


def load_mni152_axial_slices(size=64, *, z_range=(30, 141), step=1):
    """Axial slices of the MNI152 2009a T1 template (nilearn wheel), cropped and resized.

    Every slice is cut to the square around the brain's bounding box over the whole volume
    (zero padding where needed), resized to ``size x size`` and min-max normalised to [0, 1].
    The template is brain-masked, so the background is 0.

    Parameters
    ----------
    size : int, default=64
    z_range : (int, int), default=(30, 141)
        Axial slice indices ``[start, stop)`` (the brain spans about 25-150 of 189).
    step : int, default=1
        Take every ``step``-th slice.

    Returns
    -------
    ndarray of shape (n_slices, size, size), float64

    Raises
    ------
    DataNotAvailableError
        When nilearn is not installed.

    Examples
    --------
    >>> from subspacelab.datasets import load_mni152_axial_slices
    >>> X = load_mni152_axial_slices(size=32, step=10)  # doctest: +SKIP
    >>> X.shape  # doctest: +SKIP
    (12, 32, 32)
    """
    check_param("size", size, "int", low=8)
    check_param("step", step, "int", low=1)
    vol = load_mni152_t1()
    lo, hi = (int(check_param("z_range", z, "int", low=0, high=vol.shape[2])) for z in z_range)
    if hi <= lo:
        raise ValueError(f"z_range must be increasing, got {z_range}")
    fg = np.argwhere(vol > 0)
    (x0, y0), (x1, y1) = fg[:, :2].min(0), fg[:, :2].max(0) + 1
    side = max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    pad = side
    padded = np.pad(vol, ((pad, pad), (pad, pad), (0, 0)))
    sx, sy = cx - side // 2 + pad, cy - side // 2 + pad
    out = []
    for z in range(lo, hi, step):
        img = np.rot90(padded[sx:sx + side, sy:sy + side, z])
        img = resize_image(img, (size, size))
        span = img.max() - img.min()
        if span > 0:
            out.append((img - img.min()) / span)
    return np.stack(out)


# ----------------------------------------------------------------------------- spin-echo phantom

# Tissue parameters: proton density M0 (relative), T1 (ms) at 1.5 T and 3 T, T2 (ms).
# Typical literature values for brain tissue (approximate; T1 between field strengths follows a
# power law in B0, T2 is taken field-independent).
_TISSUES = {
    "fat": (0.90, 260.0, 370.0, 85.0),
    "bone": (0.10, 500.0, 550.0, 2.0),
    "csf": (1.00, 4200.0, 4300.0, 1800.0),
    "gray": (0.80, 950.0, 1330.0, 100.0),
    "white": (0.69, 600.0, 830.0, 80.0),
    "lesion": (0.85, 1100.0, 1450.0, 140.0),
}
# Modified Shepp-Logan ellipses (centre x, centre y, semi-axis a, b, angle deg) with tissues.
_ELLIPSES = (
    (0.0, 0.0, 0.69, 0.92, 0.0, "fat"),
    (0.0, -0.0184, 0.64, 0.86, 0.0, "bone"),
    (0.0, -0.0184, 0.63, 0.84, 0.0, "gray"),
    (0.0, -0.0184, 0.55, 0.76, 0.0, "white"),
    (0.22, 0.0, 0.11, 0.31, -18.0, "csf"),
    (-0.22, 0.0, 0.16, 0.41, 18.0, "csf"),
    (0.0, 0.35, 0.21, 0.25, 0.0, "gray"),
    (0.0, 0.1, 0.046, 0.046, 0.0, "lesion"),
    (0.0, -0.1, 0.046, 0.046, 0.0, "lesion"),
    (-0.08, -0.605, 0.046, 0.023, 0.0, "gray"),
    (0.0, -0.605, 0.023, 0.023, 0.0, "gray"),
    (0.06, -0.605, 0.023, 0.046, 0.0, "gray"),
)

#: The two "scanners" of spec §4.5 (iv): same nominal T1 weighting, different field strength,
#: TR/TE, receive-coil profile (a smooth multiplicative field, amplitude ``coil``) and noise
#: (Rician, standard deviation ``noise`` of the maximum signal).
SCANNERS = {
    "A": {"b0": 3.0, "tr": 500.0, "te": 15.0, "coil": 0.0, "noise": 0.0},
    "B": {"b0": 1.5, "tr": 600.0, "te": 20.0, "coil": 0.15, "noise": 0.01},
}


def _tissue_maps(b0):
    out = {}
    for name, (m0, t1_15, t1_3, t2) in _TISSUES.items():
        kappa = math.log(t1_3 / t1_15) / math.log(2.0)
        out[name] = (m0, t1_15 * (b0 / 1.5) ** kappa, t2)
    return out


def make_spin_echo_phantoms(n_samples=16, size=64, *, scanner="A", random_state=None):
    r"""MR-like head phantoms imaged with the spin-echo equation
    :math:`S = M_0\,(1 - e^{-TR/T_1(B_0)})\,e^{-TE/T_2}` (spec §4.5 iv).

    Each sample is a "subject": the ellipses of the modified Shepp-Logan phantom with tissue
    labels (scalp fat, skull, gray and white matter, CSF, lesions): the head's size varies
    (+-4 %), the inner structures move, resize and turn individually, and a smooth +-5 %
    proton-density texture is added. The same ``random_state`` gives the
    same subjects for every scanner, so two scanners image the same anatomy.

    Parameters
    ----------
    n_samples : int
    size : int
    scanner : {"A", "B"} or dict
        A key of :data:`SCANNERS`, or a dict with ``b0`` (T), ``tr``, ``te`` (ms), ``coil``
        (amplitude of a smooth receive-coil field) and ``noise`` (Rician sigma, fraction of the
        maximum).
    random_state : int, Generator or None

    Returns
    -------
    ndarray of shape (n_samples, size, size), min-max normalised to [0, 1] per image

    Examples
    --------
    >>> from subspacelab.datasets import make_spin_echo_phantoms
    >>> a = make_spin_echo_phantoms(2, 32, scanner="A", random_state=0)
    >>> b = make_spin_echo_phantoms(2, 32, scanner="B", random_state=0)
    >>> a.shape, bool(abs(a - b).max() > 0.05)
    ((2, 32, 32), True)
    """
    check_param("n_samples", n_samples, "int", low=1)
    check_param("size", size, "int", low=8)
    if isinstance(scanner, str):
        check_param("scanner", scanner, "option", options=tuple(SCANNERS))
        params = SCANNERS[scanner]
    elif isinstance(scanner, dict):
        missing = {"b0", "tr", "te", "coil", "noise"} - set(scanner)
        if missing:
            raise ValueError(f"scanner dict misses {sorted(missing)}")
        params = scanner
    else:
        raise TypeError(f"scanner must be 'A', 'B' or a dict, got {type(scanner).__name__}")
    for key in ("b0", "tr", "te"):
        check_param(key, params[key], "real", low=0.0, closed="neither")
    check_param("coil", params["coil"], "real", low=0.0, high=1.0, closed="left")
    check_param("noise", params["noise"], "real", low=0.0)
    tissues = _tissue_maps(params["b0"])
    rng = check_random_state(random_state)
    # subject draws first (the same for every scanner), then scanner-specific draws
    seeds = rng.integers(0, 2**63 - 1, size=(n_samples, 2))
    v, u = np.meshgrid(np.linspace(1, -1, size), np.linspace(-1, 1, size), indexing="ij")
    out = np.empty((n_samples, size, size))
    for i in range(n_samples):
        sub = np.random.default_rng(seeds[i, 0])
        m0 = np.zeros((size, size))
        r1 = np.zeros((size, size))
        r2 = np.zeros((size, size))
        head = 1.0 + 0.04 * sub.standard_normal()  # head size; the nested outer layers share it
        for k, (cx, cy, a, b, ang, tissue) in enumerate(_ELLIPSES):
            inner = k >= 4  # ventricles, gray-matter blobs, lesions move and change size individually
            scale = head * (1.0 + 0.08 * sub.standard_normal()) if inner else head
            cx = head * cx + (0.03 * sub.standard_normal() if inner else 0.0)
            cy = head * cy + (0.03 * sub.standard_normal() if inner else 0.0)
            th = math.radians(ang + (6.0 * sub.standard_normal() if inner else 0.0))
            du, dv = u - cx, v - cy
            inside = ((du * math.cos(th) + dv * math.sin(th)) / (a * scale)) ** 2 + \
                     ((-du * math.sin(th) + dv * math.cos(th)) / (b * scale)) ** 2 <= 1.0
            pd, t1, t2 = tissues[tissue]
            m0[inside], r1[inside], r2[inside] = pd, 1.0 / t1, 1.0 / t2
        texture = _smooth_field(sub, u, v, degree=3)
        m0 = m0 * (1.0 + 0.05 * texture)
        signal = m0 * (1.0 - np.exp(-params["tr"] * r1)) * np.exp(-params["te"] * r2)
        signal[m0 == 0] = 0.0
        scan = np.random.default_rng(seeds[i, 1] + int(params["b0"] * 1000 + params["tr"] + 7 * params["te"]))
        if params["coil"]:
            signal = signal * (1.0 + params["coil"] * _smooth_field(scan, u, v, degree=2))
        if params["noise"]:
            sigma = params["noise"] * signal.max()
            signal = np.hypot(signal + sigma * scan.standard_normal(signal.shape), sigma * scan.standard_normal(signal.shape))
        out[i] = (signal - signal.min()) / (signal.max() - signal.min())
    return out


def _smooth_field(rng, u, v, degree):
    """A random polynomial of total degree ``degree`` in (u, v), scaled to max |.| = 1."""
    field = np.zeros_like(u)
    for i in range(degree + 1):
        for j in range(degree + 1 - i):
            if i + j:
                field += rng.standard_normal() * u**i * v**j
    m = np.abs(field).max()
    return field / m if m > 0 else field


# ----------------------------------------------------------------------------- domain shifts

SHIFT_KINDS = ("gamma", "exp", "log", "log_exp", "lut", "bias_field", "rician_noise", "blur", "contrast",
               "inversion")


class DomainShift:
    r"""A seeded, composable scanner/protocol shift of images in [0, 1] (spec §4.5).

    Kinds (applied in the order given, each with fresh random parameters per image):

    * ``"gamma"``: :math:`x^\gamma`, :math:`\gamma` drawn from the reference's
      {0.7, 0.8, 0.9, 1.2, 1.3, 1.5};
    * ``"exp"``, ``"log"``: the reference's :math:`e^x` and :math:`\log(1 + 3x)`;
      ``"log_exp"`` draws one of the two per image;
    * ``"lut"``: a random monotone piecewise-linear look-up table (8 knots);
    * ``"bias_field"``: multiplication by :math:`1 + a\,p(u, v)`, :math:`p` a random cubic
      polynomial with :math:`\max|p| = 1`, :math:`a` = ``bias_amplitude`` (default 0.3: +-30 %);
    * ``"rician_noise"``: :math:`|x + \sigma n_1 + i\sigma n_2|`, :math:`\sigma` uniform in
      ``noise_range`` (default 1-5 % of the maximum);
    * ``"blur"``: Gaussian blur, width uniform in ``blur_range`` pixels (default 0.5-1.5);
    * ``"contrast"``: :math:`c\,x + b` with :math:`c \in [0.6, 1.4]`, :math:`b \in [-0.1, 0.1]`;
    * ``"inversion"``: :math:`1 - x` inside the foreground (a T2-like contrast): a documented
      **failure case** of blind harmonisation, whose fidelity term assumes positive correlation.

    The background (pixels with :math:`x \le` ``foreground_threshold``, the brain mask of a
    skull-stripped slice) stays 0 for the intensity maps. Every output image is min-max
    normalised to [0, 1], like the reference's ``gen_sc``.

    Parameters
    ----------
    kinds : str or sequence of str
    random_state : int, Generator or None
    bias_amplitude : float, default=0.3
    noise_range, blur_range : (float, float)
    foreground_threshold : float, default=0.05

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.datasets import DomainShift
    >>> x = np.linspace(0, 1, 64).reshape(1, 8, 8)
    >>> y = DomainShift(["gamma", "bias_field"], random_state=0)(x)
    >>> y.shape, float(y.min()), float(y.max())
    ((1, 8, 8), 0.0, 1.0)
    """

    _GAMMAS = (0.7, 0.8, 0.9, 1.2, 1.3, 1.5)

    def __init__(self, kinds, *, random_state=None, bias_amplitude=0.3, noise_range=(0.01, 0.05),
                 blur_range=(0.5, 1.5), foreground_threshold=0.05):
        kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
        if not kinds:
            raise ValueError("kinds must name at least one shift")
        for k in kinds:
            check_param("kinds", k, "option", options=SHIFT_KINDS)
        self.kinds = kinds
        self.random_state = random_state
        self.bias_amplitude = check_param("bias_amplitude", bias_amplitude, "real", low=0.0, high=1.0,
                                          closed="left")
        self.noise_range = self._range("noise_range", noise_range)
        self.blur_range = self._range("blur_range", blur_range)
        self.foreground_threshold = check_param("foreground_threshold", foreground_threshold, "real", low=0.0,
                                                high=1.0, closed="left")
        self._rng = check_random_state(random_state)

    @staticmethod
    def _range(name, r):
        lo, hi = (check_param(name, float(v), "real", low=0.0) for v in r)
        if hi < lo:
            raise ValueError(f"{name} must be (low, high) with low <= high, got {r}")
        return lo, hi

    def __repr__(self):
        return f"DomainShift({list(self.kinds)!r}, random_state={self.random_state!r})"

    def __call__(self, X):
        """Shift every image of ``X`` (n, H, W) (or one image (H, W)); returns float64 in [0, 1]."""
        X = np.asarray(X, dtype=np.float64)
        single = X.ndim == 2
        if single:
            X = X[None]
        if X.ndim != 3 or 0 in X.shape:
            raise ValueError(f"X must be a non-empty stack of images (n, H, W) or one image (H, W), got shape {X.shape}")
        if not np.isfinite(X).all():
            raise ValueError("X must not contain NaN or infinity")
        out = np.stack([self._one(x) for x in X])
        return out[0] if single else out

    def _one(self, x):
        rng = self._rng
        H, W = x.shape
        fg = x > self.foreground_threshold
        y = x.copy()
        for kind in self.kinds:
            if kind == "log_exp":
                kind = "exp" if rng.random() < 0.5 else "log"
            if kind == "gamma":
                y = np.clip(y, 0.0, None) ** self._GAMMAS[rng.integers(len(self._GAMMAS))]
            elif kind == "exp":
                y = np.where(fg, np.exp(y), 0.0)
            elif kind == "log":
                y = np.log1p(3.0 * np.clip(y, 0.0, None))
            elif kind == "lut":
                knots = np.concatenate(([0.0], np.sort(rng.random(6)), [1.0]))
                grid = np.linspace(0.0, 1.0, knots.size)
                lo, hi = y.min(), y.max()
                z = (y - lo) / (hi - lo) if hi > lo else y
                y = np.where(fg, np.interp(z, grid, knots), 0.0)
            elif kind == "bias_field":
                v, u = np.meshgrid(np.linspace(-1, 1, H), np.linspace(-1, 1, W), indexing="ij")
                y = y * (1.0 + self.bias_amplitude * _smooth_field(rng, u, v, degree=3))
            elif kind == "rician_noise":
                sigma = rng.uniform(*self.noise_range) * max(y.max(), 1e-12)
                y = np.hypot(y + sigma * rng.standard_normal(y.shape), sigma * rng.standard_normal(y.shape))
            elif kind == "blur":
                from scipy import ndimage

                y = ndimage.gaussian_filter(y, rng.uniform(*self.blur_range), mode="constant")
            elif kind == "contrast":
                y = np.where(fg, rng.uniform(0.6, 1.4) * y + rng.uniform(-0.1, 0.1), 0.0)
            elif kind == "inversion":
                hi = y[fg].max() if fg.any() else y.max()
                y = np.where(fg, hi - y + y[fg].min() if fg.any() else hi - y, 0.0)
        lo, hi = y.min(), y.max()
        if hi <= lo:
            raise ValueError("the shift produced a constant image (the input has no contrast)")
        return (y - lo) / (hi - lo)
