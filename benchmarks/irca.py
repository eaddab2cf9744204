"""IRCACalibrator benchmark: the four real ImSPOC prototypes and a per-pixel calibration.

For each prototype it runs, in one process, our default configuration (batched bounded
Levenberg–Marquardt, Chebyshev basis, initialised from the data) and the scipy reference path
that reproduces the authors' algorithm (stage 1 on the neighbourhood mean, then one
``scipy.optimize.least_squares`` per interferometer, power basis, no bounds), and reports

* ``median_rel_rmse_train``: median over interferometers of RMS(T - y) / mean(y) on the
  training sources;
* ``median_rel_rmse_heldout``: the same on a random 10 % of the sources held out of the fit
  (random hold-out keeps the sampling density; the fit keeps the full set's Nyquist OPD);
* ``fraction_R_out_of_bounds``: share of the fitted R(sigma_j) samples outside [0, 1)
  (a tolerance of 1e-12 absorbs the rounding of evaluating the polynomial);
* ``seconds``: wall-clock time of the training fit (Numba kernels warmed up beforehand), and
  ``cpu_seconds`` (process CPU time, all threads), which is less sensitive to other load.

``per_pixel`` gives pixels per second of the batched fit on a simulated per-pixel calibration
for every available kernel (2^16 pixels for Numba/CUDA, 2^12 for the generic kernel; 16 times
fewer with ``--quick``). ``--quick`` also runs the scipy
reference on every 8th interferometer only (``scipy_rows`` says how many).

Usage: ``python benchmarks/irca.py [--quick] [--json PATH] [--markdown PATH]``; prints one JSON
object, then a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from subspacelab import IRCACalibrator  # noqa: E402
from subspacelab.datasets import IMSPOC_PROTOTYPES, load_imspoc, make_fabry_perot_acquisition  # noqa: E402
from subspacelab.estimators.irca import REFERENCE_MEDIAN_RMSE, relative_rmse  # noqa: E402
from subspacelab.kernels import available_backends  # noqa: E402


def _fit(cal, X, s, flat, X_init=None, cpu=None):
    t0, c0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cal.fit(X, s, flat=flat, X_init=X_init)
    if cpu is not None:
        cpu.append(time.process_time() - c0)
    return time.perf_counter() - t0


def _out_of_bounds(cal, s):
    R = np.asarray(cal.reflectivity(s))
    R = R[np.all(np.isfinite(R), axis=-1)]
    return float(np.mean((R < -1e-12) | (R >= 1.0)))


def run_prototype(name, quick, rng):
    d = load_imspoc(name)
    n_ifm, n_src = d.data.shape
    rows = np.arange(n_ifm)
    common = dict(opd_span=d.opd_span, opd_range=d.opd_range)
    configs = {
        "ours": (dict(**common), False),
        "scipy_reference": (dict(solver="scipy", basis="power", bounds=False, **common), True),
    }
    held = np.sort(rng.choice(n_src, size=max(2, n_src // 10), replace=False))
    train = np.setdiff1d(np.arange(n_src), held)
    full_opd_max = (n_src - 1) / (2.0 * (d.wavenumbers[-1] - d.wavenumbers[0]))
    out = {"n_interferometers": n_ifm, "n_sources": n_src, "n_heldout_sources": int(held.size),
           "reference_median_rel_rmse_train": REFERENCE_MEDIAN_RMSE[name]}
    for key, (kw, use_mean) in configs.items():
        sel = rows[::8] if (quick and key == "scipy_reference") else rows
        nominal = d.opd_step * sel
        Xi = d.mean[sel] if use_mean else None
        cal = IRCACalibrator(opd_init=nominal, **kw)
        cpu = []
        sec = _fit(cal, d.data[sel], d.wavenumbers, d.flat[sel], Xi, cpu)
        res = {
            "median_rel_rmse_train": float(np.nanmedian(cal.rmse_)),
            "seconds": sec,
            "cpu_seconds": cpu[0],
            "fraction_R_out_of_bounds": _out_of_bounds(cal, d.wavenumbers),
        }
        cal_h = IRCACalibrator(opd_init=nominal, opd_max=full_opd_max, **kw)
        _fit(cal_h, d.data[sel][:, train], d.wavenumbers[train], d.flat[sel][:, train],
             None if Xi is None else Xi[:, train])
        pred = np.asarray(cal_h.predict(d.wavenumbers[held]))
        res["median_rel_rmse_heldout"] = float(np.nanmedian(relative_rmse(pred, d.data[sel][:, held])))
        res["converged_fraction"] = float(np.mean(cal.converged_))
        if key == "scipy_reference":
            res["scipy_rows"] = int(sel.size)
        out[key] = res
    ours, ref = out["ours"], out["scipy_reference"]
    ref_full = ref["seconds"] * n_ifm / ref["scipy_rows"]
    out["speedup"] = ref_full / ours["seconds"]
    out["speedup_is_extrapolated"] = ref["scipy_rows"] != n_ifm
    return out


def run_per_pixel(quick):
    """Per-pixel calibration: sub-images of 64 x 64 pixels, one OPD per pixel (field angle).

    The Numba and CUDA kernels get 2^16 pixels (2^12 with --quick); the generic array-API kernel
    stores the Jacobian and iterates whole batches until their slowest pixel converges, so it
    gets 2^12 pixels (2^10) to keep the run short; pixels per second is comparable across rows.
    """
    out = {"n_sources": 201, "noise": 0.01,
           "configuration": "default degrees (0, 0, 5, 5), opd_span 0.005, nominal OPD per sub-image, "
                            "64 x 64-pixel sub-images (16 x 16 with --quick), field angle 1 degree at the corner"}
    for kernel in available_backends():
        if kernel == "cuda" and not _real_gpu():
            continue
        n_pix = (2**10 if kernel == "generic" else 2**12) if quick else (2**12 if kernel == "generic" else 2**16)
        side = 16 if quick else 64
        n_ifm = max(1, n_pix // (side * side))
        acq = make_fabry_perot_acquisition(n_ifm, 201, wavenumber_range=(1.0, 2.0), opd_step=0.25, opd_offset=10.0,
                                           subimage_shape=(side, side), fov=1.0, noise=0.01, random_state=0)
        n_pix = int(np.prod(acq.data.shape[:-1]))
        cal = IRCACalibrator(opd_init=acq.opd_nominal, opd_span=0.005, kernel=kernel)
        cpu = []
        sec = _fit(cal, acq.data, acq.wavenumbers, acq.flat, None, cpu)
        out[kernel] = {
            "n_pixels": n_pix,
            "pixels_per_second": n_pix / sec,
            "seconds": sec,
            "cpu_seconds": cpu[0],
            "median_abs_opd_error_um": float(np.median(np.abs(np.asarray(cal.opd_) - acq.opd))),
            "median_rel_rmse_train": float(np.median(cal.rmse_)),
            "converged_fraction": float(np.mean(cal.converged_)),
        }
        del acq, cal
    return out


def _real_gpu():
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        return False
    from subspacelab._backend import gpu_available

    return gpu_available()


def warm_up():
    acq = make_fabry_perot_acquisition(4, 60, noise=0.01, random_state=0)
    for kernel in available_backends():
        if kernel == "cuda" and not _real_gpu():
            continue
        _fit(IRCACalibrator(opd_init=acq.opd_nominal, kernel=kernel), acq.data, acq.wavenumbers, acq.flat)


def markdown(result):
    lines = [
        "| prototype | method | median rel. RMSE train | held-out | R out of [0,1) | seconds (wall) | CPU seconds "
        "| reference (authors' code) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in IMSPOC_PROTOTYPES:
        r = result[name]
        for key in ("ours", "scipy_reference"):
            m = r[key]
            sec = f"{m['seconds']:.2f}"
            if key == "scipy_reference" and m["scipy_rows"] != r["n_interferometers"]:
                sec += f" ({m['scipy_rows']} of {r['n_interferometers']} rows)"
            lines.append(
                f"| {name} | {key} | {m['median_rel_rmse_train']:.4f} | {m['median_rel_rmse_heldout']:.4f} | "
                f"{100 * m['fraction_R_out_of_bounds']:.2f} % | {sec} | {m['cpu_seconds']:.2f} | "
                f"{r['reference_median_rel_rmse_train']:.4f} |"
            )
        ext = " (extrapolated)" if r["speedup_is_extrapolated"] else ""
        lines.append(f"| {name} | speed-up (wall) | | | | {r['speedup']:.1f}x{ext} | | |")
    pp = result["per_pixel"]
    lines += ["", f"Per-pixel calibration, simulated pixels x {pp['n_sources']} sources ({pp['configuration']}):", "",
              "| kernel | pixels | pixels / s | seconds (wall) | CPU seconds | median abs OPD error (µm) |",
              "|---|---|---|---|---|---|"]
    for k, v in pp.items():
        if isinstance(v, dict):
            lines.append(f"| {k} | {v['n_pixels']} | {v['pixels_per_second']:.0f} | {v['seconds']:.1f} | "
                         f"{v['cpu_seconds']:.1f} | {v['median_abs_opd_error_um']:.2e} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--markdown", default=None)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    warm_up()
    result = {}
    for name in IMSPOC_PROTOTYPES:
        result[name] = run_prototype(name, args.quick, rng)
    result["per_pixel"] = run_per_pixel(args.quick)
    result["meta"] = {"quick": args.quick, "machine": platform.machine(), "cpu_count": os.cpu_count(),
                      "python": platform.python_version(), "kernels": available_backends()}
    text = json.dumps(result, indent=2)
    print(text)
    md = markdown(result)
    print()
    print(md)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text + "\n")
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(md + "\n")


if __name__ == "__main__":
    main()
