"""DDS benchmark: accelerated multi-coil MRI and sparse-view CT on MNI152 T1 axial slices.

Prints one JSON object keyed by task, then by method,

    {"<task>": {"<method>": {"psnr", "ssim", "nfe", "seconds", ...}, ..., "_setup": {...}}, ..., "meta": {...}}

(``_setup`` describes the task: realised acceleration, coils or views, shape, noise level)
then a markdown table. PSNR/SSIM: mean over the test slices, data_range 1, no renormalisation
(the DDS reference min-max normalises before its PSNR; we do not). ``nfe`` counts denoiser
evaluations (0 for the classical methods); ``seconds`` is the wall time of the whole batch of
test slices (compare ratios, not absolute times).

Data: MNI152 2009a T1 template (nilearn wheel), axial slices resized to S x S, intensities in
[0, 1]. Test slices z = 75, 80, ..., 120 (full run; z = 85, 105 in the quick run), one tuning slice (z = 65) picks TV's
lambda, the CG iteration count and DDS's gamma (noisy tasks; fixed to 10 in the quick run); the priors are fitted on the
axial slices z in [30, 160) at least 2 mm from every test and tuning slice.

Tasks (all methods share slices, masks, noise draws and the metric function):

* ``mri_x4_noisy``: 8 birdcage coils, equispaced x4 with 8 % ACS, complex Gaussian noise with
  standard deviation 0.01 in the real and in the imaginary part of every sampled k-space value;
* ``mri_x8``: x8 with 4 % ACS, noiseless; ``mri_x8_noisy``: x8, noise 0.01;
* ``ct_30_views``, ``ct_8_views``: parallel-beam CT (matched Joseph projector), noiseless.

Methods: zero-filled (MRI) / FBP (CT); CG-SENSE / CGLS (best iteration count on the tuning
slice); TV by ADMM (lambda tuned on the tuning slice); DDS with the MoLRG prior and with a
Gaussian (PCA) prior. Not run (not implemented in this branch): DPS and DDS with the U-Net prior.

    python benchmarks/dds.py [--quick] [--json-out FILE] [--md-out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

from subspacelab import DDSReconstructor, MoLRGDenoiser
from subspacelab.datasets import load_mni152_t1, resize_image
from subspacelab.diffusion import GaussianDenoiser
from subspacelab.diffusion.baselines import adjoint_reconstruction, least_squares, tv_admm
from subspacelab.metrics import psnr, ssim
from subspacelab.operators import MultiCoilMRI, ParallelBeamCT, birdcage_maps, sampling_mask, sparse_view_angles


def metrics(ref, rec):
    return float(np.mean(psnr(ref, rec, data_range=1.0))), float(np.mean(ssim(ref, rec, data_range=1.0)))


def slices(vol, zs, size):
    return np.stack([resize_image(np.ascontiguousarray(np.rot90(vol[:, :, z])), (size, size)) for z in zs])


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run_task(name, A, y_test, y_tune, x_test, x_tune, priors, cfg, noisy, is_ct):
    res = {}
    # zero-filled / FBP
    if is_ct:
        rec, sec = timed(lambda: A.fbp(y_test))
        label = "fbp"
    else:
        rec, sec = timed(lambda: adjoint_reconstruction(A, y_test))
        label = "zero_filled"
    p, s = metrics(x_test, rec)
    res[label] = {"psnr": p, "ssim": s, "nfe": 0, "seconds": sec}
    # CG least squares: best iteration count on the tuning slice
    best = max(cfg["cg_grid"], key=lambda k: metrics(x_tune, least_squares(A, y_tune, n_iter=k))[0])
    rec, sec = timed(lambda: least_squares(A, y_test, n_iter=best))
    p, s = metrics(x_test, rec)
    res["cgls" if is_ct else "cg_sense"] = {"psnr": p, "ssim": s, "nfe": 0, "seconds": sec, "n_iter": best}
    # TV-ADMM: lambda tuned on the tuning slice
    lam = max(cfg["tv_lams"], key=lambda v: metrics(x_tune, tv_admm(A, y_tune, lam=v, n_iter=cfg["tv_iter"]))[0])
    rec, sec = timed(lambda: tv_admm(A, y_test, lam=lam, n_iter=cfg["tv_iter"]))
    p, s = metrics(x_test, rec)
    res["tv_admm"] = {"psnr": p, "ssim": s, "nfe": 0, "seconds": sec, "lam": lam, "n_iter": cfg["tv_iter"]}
    # DDS with each prior (gamma tuned on the tuning slice for noisy data)
    for pname, prior in priors.items():
        gammas = cfg["gammas"] if noisy else [None]

        def make(g):
            kw = {"noise_std": 0.01, "gamma": g} if g is not None else {}
            return DDSReconstructor(A, prior=prior, n_steps=cfg["n_steps"], cg_iter=5, eta=0.85, random_state=0, **kw)

        g = max(gammas, key=lambda v: make(v).fit(x_tune).score(y_tune, x_tune)) if len(gammas) > 1 else gammas[0]
        est = make(g).fit(x_tune)  # the prior is pre-fitted: fit only checks the shape
        rec, sec = timed(lambda: est.predict(y_test))
        p, s = metrics(x_test, rec)
        res[f"dds_{pname}"] = {"psnr": p, "ssim": s, "nfe": cfg["n_steps"], "seconds": sec, "gamma": g,
                               "eta": 0.85, "cg_iter": 5}
    print(f"{name}: " + ", ".join(f"{k} {v['psnr']:.2f}" for k, v in res.items()), file=sys.stderr)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json-out")
    ap.add_argument("--md-out")
    args = ap.parse_args(argv)
    quick = args.quick
    cfg = {
        "mri_size": 64 if quick else 160,
        "ct_size": 64 if quick else 128,
        "test_z": [85, 105] if quick else list(range(75, 125, 5)),
        "tune_z": 65,
        "n_steps": 50,
        "cg_grid": [4, 8, 16, 32],
        "tv_lams": [3e-4, 1e-3, 3e-3, 1e-2],
        "tv_iter": 30 if quick else 100,
        "gammas": [10.0] if quick else [1.0, 10.0, 100.0],
        "molrg": {"n_components": 3, "subspace_dim": 16},
        "gaussian_rank": 32 if quick else 64,
    }
    vol = load_mni152_t1()
    held = cfg["test_z"] + [cfg["tune_z"]]
    train_z = [z for z in range(30, 160) if min(abs(z - t) for t in held) >= 2]
    out = {}
    rng = np.random.default_rng(0)
    t_fit = {}
    for kind, size in (("mri", cfg["mri_size"]), ("ct", cfg["ct_size"])):
        X = slices(vol, train_z, size)
        x_test, x_tune = slices(vol, cfg["test_z"], size), slices(vol, [cfg["tune_z"]], size)
        rows = X.reshape(len(X), -1)
        molrg, t_m = timed(lambda: MoLRGDenoiser(center=True, n_init=2, random_state=0, **cfg["molrg"]).fit(rows))
        gauss, t_g = timed(lambda: GaussianDenoiser(n_components=cfg["gaussian_rank"]).fit(rows))
        t_fit[kind] = {"molrg_seconds": t_m, "gaussian_seconds": t_g}
        priors = {"molrg": molrg, "gaussian": gauss}
        if kind == "mri":
            maps = birdcage_maps((size, size), n_coils=8)
            for task, R, acs, noisy in (("mri_x4_noisy", 4, 0.08, True), ("mri_x8", 8, 0.04, False),
                                        ("mri_x8_noisy", 8, 0.04, True)):
                m = sampling_mask((size, size), "equispaced", acceleration=R, center_fraction=acs, random_state=0).mask
                A = MultiCoilMRI(m, maps)

                def measure(x):
                    y = A.forward(x)
                    if noisy:
                        y = y + m * 0.01 * (rng.standard_normal(y.shape) + 1j * rng.standard_normal(y.shape))
                    return y

                out[task] = run_task(task, A, measure(x_test), measure(x_tune), x_test, x_tune, priors, cfg, noisy, False)
                out[task]["_setup"] = {"acceleration": float(size * size / m.sum()), "n_coils": 8, "shape": [size, size],
                                       "noise_std": 0.01 if noisy else 0.0}
        else:
            for task, nv in (("ct_30_views", 30), ("ct_8_views", 8)):
                A = ParallelBeamCT((size, size), sparse_view_angles(nv))
                out[task] = run_task(task, A, A.forward(x_test), A.forward(x_tune), x_test, x_tune, priors, cfg, False, True)
                out[task]["_setup"] = {"n_views": nv, "shape": [size, size], "noise_std": 0.0}
    out["meta"] = {
        "mode": "quick" if quick else "full",
        "config": cfg,
        "n_train_slices": len(train_z),
        "prior_fit": t_fit,
        "not_run": ["dps", "dds_unet"],
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    text = json.dumps(out, indent=1)
    print(text)
    lines = ["| task | method | PSNR | SSIM | NFE | seconds |", "|---|---|---|---|---|---|"]
    for task, res in out.items():
        if task == "meta":
            continue
        for meth, r in res.items():
            if meth.startswith("_"):
                continue
            lines.append(f"| {task} | {meth} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['nfe']} | {r['seconds']:.2f} |")
    md = "\n".join(lines)
    print(md)
    if args.json_out:
        with open(args.json_out, "w") as fh:
            fh.write(text + "\n")
    if args.md_out:
        with open(args.md_out, "w") as fh:
            fh.write(f"DDS benchmark ({out['meta']['mode']} run)\n\n" + md + "\n")


if __name__ == "__main__":
    main()
