r"""
Calibrating a real Fabry-Perot interferometer array with IRCA
=============================================================

The ImSPOC UV prototype ``imspoc_uv_2`` (packaged real acquisitions: 319 interferometers seen
under 451 monochromatic sources) is calibrated by :class:`~subspacelab.IRCACalibrator`: gain,
optical path difference :math:`\delta_i(\sigma)`, phase :math:`\psi_i(\sigma)` and
reflectivity :math:`R_i(\sigma)` of every interferometer, fitted jointly by a batched bounded
Levenberg-Marquardt. The figure shows the measured and modelled transmittance of three
interferometers, the fitted OPD staircase, and the distribution of the relative RMSE::

    python examples/irca_calibration.py [--out irca_calibration.png]
"""

import argparse
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402

from subspacelab import IRCACalibrator  # noqa: E402
from subspacelab.datasets import load_imspoc  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--out", default="irca_calibration.png")
args = ap.parse_args()

d = load_imspoc("imspoc_uv_2")
cal = IRCACalibrator(opd_init=d.opd_step, opd_span=d.opd_span, opd_range=d.opd_range)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)  # a few rows stop at max_iter
    cal.fit(d.data, d.wavenumbers, flat=d.flat)
T = np.asarray(cal.predict(d.wavenumbers))
R = np.asarray(cal.reflectivity(d.wavenumbers))
rmse = np.asarray(cal.rmse_)
print(f"{d.data.shape[0]} interferometers x {d.data.shape[1]} sources")
print(f"median relative RMSE {np.median(rmse):.4f}; fitted R(sigma) between {R.min():.3f} and {R.max():.3f}")

fig = plt.figure(figsize=(11, 6))
grid = fig.add_gridspec(2, 3)
for j, i in enumerate((20, 160, 300)):
    ax = fig.add_subplot(grid[0, j])
    ax.plot(d.wavenumbers, d.data[i], ".", ms=2, label="measured")
    ax.plot(d.wavenumbers, T[i], lw=1, label="IRCA model")
    ax.set_title(f"interferometer {i}: OPD {float(cal.opd_[i]):.2f} µm", fontsize=9)
    ax.set_xlabel("wavenumber (µm⁻¹)")
    if j == 0:
        ax.legend(fontsize=8)
ax = fig.add_subplot(grid[1, :2])
ax.plot(np.asarray(cal.opd_), ".", ms=3)
ax.set_xlabel("interferometer")
ax.set_ylabel("fitted OPD (µm)")
ax = fig.add_subplot(grid[1, 2])
ax.hist(rmse, bins=40)
ax.set_xlabel("relative RMSE per interferometer")
fig.tight_layout()
fig.savefig(args.out, dpi=120)
print(f"saved {args.out}")
