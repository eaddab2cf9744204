"""DDS benchmark: accelerated multi-coil MRI and sparse-view CT on MNI152 T1 axial slices and the Shepp-Logan phantom.

Prints one JSON object keyed by task, then by method,

    {"<task>": {"<method>": {"psnr", "ssim", "nfe", "seconds", ...}, ..., "_setup": {...}}, ..., "meta": {...}}

(``_setup`` describes the task: realised acceleration, coils or views, shape, noise level)
then a markdown table. PSNR/SSIM: mean over the test images, data_range 1, no renormalisation
(the DDS reference min-max normalises before its PSNR; we do not). ``nfe`` counts denoiser
evaluations per image, a vector-Jacobian product through the denoiser counting as one (DPS:
a forward and a VJP per step, ``2 (steps - 1) + 1``); 0 for the classical methods. ``seconds``
is the wall time of the whole batch of test images (compare ratios, not absolute times). DPS rows also
carry ``psnr_per_image`` (DPS can diverge on single images).

Data: MNI152 2009a T1 template (nilearn wheel), axial slices resized to S x S, intensities in
[0, 1]. Test slices z = 75, 85, ..., 115 (full run: 5 slices, fewer than the issue's ~10 to fit a
shared 2-core machine; z = 85, 105 in the quick run), one tuning
slice (z = 65) picks TV's lambda, the CG iteration count, DPS's step size and DDS's CG iterations per
step (5 or 10) and gamma (noisy tasks); the MoLRG prior's size (6 subspaces of dimension 16) and DDS's
eta (0.85) were chosen once on the MRI tuning slice (benchmarks/results/dds_tuning.md, a separate
tuning-slice-only study; no test slice was used); the priors are fitted/trained on the axial slices z in [30, 160) at least 2 mm from every
test and tuning slice. The Shepp-Logan tasks reconstruct scikit-image's phantom at the CT size
with the MNI-fitted priors and the parameters tuned on the MNI tuning slice (an out-of-distribution
image for the learned priors).

Tasks (all methods share images, masks, noise draws and the metric function):

* ``mri_x4_noisy``: 8 birdcage coils, equispaced x4 with 8 % ACS, complex Gaussian noise with
  standard deviation 0.01 in the real and in the imaginary part of every sampled k-space value;
* ``mri_x8``: x8 with 4 % ACS, noiseless; ``mri_x8_noisy``: x8, noise 0.01;
* ``ct_30_views``, ``ct_8_views`` (MNI152) and ``ct_30_views_shepp_logan``, ``ct_8_views_shepp_logan``:
  parallel-beam CT (matched Joseph projector), noiseless.

Methods: zero-filled (MRI) / FBP (CT); CG-SENSE / CGLS (best iteration count on the tuning
slice); TV by ADMM (lambda = c ||A||^2, c tuned on the tuning slice); DPS (1000 steps, MoLRG prior with its
closed-form vector-Jacobian product, step size c / ||A|| with c tuned on the tuning slice); DDS (50 steps) with
the MoLRG prior and with a U-Net prior (TorchDenoiser trained here, EDM loss, on the training
slices; its size and step count are in ``meta.config.unet``).

    python benchmarks/dds.py [--quick] [--only mri|ct] [--json-out FILE] [--md-out FILE]
    python benchmarks/dds.py --merge PART.json PART.json [--json-out FILE] [--md-out FILE]

``--only`` runs the MRI or the CT tasks alone (to run the two halves in two processes);
``--merge`` joins such partial JSON files into one result.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import write_outputs  # noqa: E402

from subspacelab import DDSReconstructor, MoLRGDenoiser  # noqa: E402
from subspacelab.datasets import load_mni152_t1, resize_image, shepp_logan_phantom  # noqa: E402
from subspacelab.diffusion import TorchDenoiser  # noqa: E402
from subspacelab.diffusion.baselines import adjoint_reconstruction, dps_sample, least_squares, tv_admm  # noqa: E402
from subspacelab.metrics import psnr, ssim  # noqa: E402
from subspacelab.operators import (  # noqa: E402
    MultiCoilMRI,
    ParallelBeamCT,
    birdcage_maps,
    opnorm,
    sampling_mask,
    sparse_view_angles,
)


def metrics(ref, rec):
    return float(np.mean(psnr(ref, rec, data_range=1.0))), float(np.mean(ssim(ref, rec, data_range=1.0)))


def slices(vol, zs, size):
    return np.stack([resize_image(np.ascontiguousarray(np.rot90(vol[:, :, z])), (size, size)) for z in zs])


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_task(name, A, y_test, y_tune, x_test, x_tune, priors, cfg, noisy, is_ct):
    res = {}
    norm_A = float(opnorm(A, n_iter=50))
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
    # TV-ADMM: lambda (in units of ||A||^2, the scale of the data term) tuned on the tuning slice
    lam = max((c * norm_A**2 for c in cfg["tv_lams"]),
              key=lambda v: metrics(x_tune, tv_admm(A, y_tune, lam=v, n_iter=cfg["tv_iter"]))[0])
    rec, sec = timed(lambda: tv_admm(A, y_test, lam=lam, n_iter=cfg["tv_iter"]))
    p, s = metrics(x_test, rec)
    res["tv_admm"] = {"psnr": p, "ssim": s, "nfe": 0, "seconds": sec, "lam": lam, "n_iter": cfg["tv_iter"]}
    log(f"{name}: classical done")
    # DPS with the MoLRG prior: step size (in units of 1 / ||A||) tuned on the tuning slice
    steps = cfg["dps_steps"]

    def dps(y, zeta):
        return dps_sample(priors["molrg"], A, y, n_steps=steps, step_size=zeta, random_state=0)

    zeta = max((c / norm_A for c in cfg["dps_step_sizes"]), key=lambda v: metrics(x_tune, dps(y_tune, v)[0])[0])
    (rec, info), sec = timed(lambda: dps(y_test, zeta))
    p, s = metrics(x_test, rec)
    # per-image PSNR: DPS can diverge on single images (a mean PSNR far below the others' is one blown-up slice)
    res["dps_molrg"] = {"psnr": p, "ssim": s, "nfe": info["nfe"], "seconds": sec, "steps": steps, "step_size": zeta,
                        "opnorm": norm_A, "psnr_per_image": [float(v) for v in psnr(x_test, rec, data_range=1.0)]}
    log(f"{name}: dps done")
    # DDS with each prior: CG iterations per step (and gamma on noisy data) tuned on the tuning slice
    for pname, prior in priors.items():
        gammas = cfg["gammas"] if noisy else [None]

        def make(g, k):
            kw = {"noise_std": 0.01, "gamma": g} if g is not None else {}
            return DDSReconstructor(A, prior=prior, n_steps=cfg["n_steps"], cg_iter=k, eta=cfg["dds_eta"],
                                    random_state=0, **kw)

        grid = [(g, k) for g in gammas for k in cfg["dds_cg_iters"]]
        g, k = max(grid, key=lambda v: make(*v).fit(x_tune).score(y_tune, x_tune)) if len(grid) > 1 else grid[0]
        est = make(g, k).fit(x_tune)  # the prior is pre-fitted: fit only checks the shape
        rec, sec = timed(lambda: est.predict(y_test))
        p, s = metrics(x_test, rec)
        res[f"dds_{pname}"] = {"psnr": p, "ssim": s, "nfe": cfg["n_steps"], "seconds": sec, "gamma": g,
                               "eta": cfg["dds_eta"], "cg_iter": k}
    log(f"{name}: " + ", ".join(f"{k} {v['psnr']:.2f}" for k, v in res.items()))
    return res


def fit_priors(X, cfg, t_fit, kind):
    rows = X.reshape(len(X), -1)
    molrg, t_m = timed(lambda: MoLRGDenoiser(center=True, n_init=2, random_state=0, **cfg["molrg"]).fit(rows))
    log(f"{kind}: MoLRG fitted in {t_m:.0f} s")
    ucfg = dict(cfg["unet"])
    ucfg["channel_mult"] = tuple(ucfg["channel_mult"])
    unet, t_u = timed(lambda: TorchDenoiser(n_threads=1, random_state=0, **ucfg).fit(X))
    hist = unet.loss_history_
    log(f"{kind}: U-Net trained in {t_u:.0f} s, final loss {np.mean(hist[-20:]):.4f}")
    t_fit[kind] = {"molrg_seconds": t_m, "unet_seconds": t_u, "unet_loss_first_20": float(np.mean(hist[:20])),
                   "unet_loss_last_20": float(np.mean(hist[-20:]))}
    return {"molrg": molrg, "unet": unet}


def markdown(out):
    meta = out["meta"]
    lines = [f"DDS benchmark ({meta['mode']} run)", ""]
    for note in meta.get("notes", []):
        lines.append(f"* {note}")
    lines += ["", "| task | method | PSNR | SSIM | NFE | seconds |", "|---|---|---|---|---|---|"]
    for task, res in out.items():
        if task == "meta":
            continue
        for meth, r in res.items():
            if meth.startswith("_"):
                continue
            lines.append(f"| {task} | {meth} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['nfe']} | {r['seconds']:.2f} |")
    return "\n".join(lines)


def merge(paths):
    out, metas = {}, []
    for path in paths:
        with open(path) as fh:
            part = json.load(fh)
        metas.append(part.pop("meta"))
        out.update(part)
    meta = dict(metas[0])
    meta["parts"] = [m.get("only") for m in metas]
    meta["prior_fit"] = {k: v for m in metas for k, v in m["prior_fit"].items()}
    meta["wall_seconds"] = {m.get("only"): m.get("wall_seconds") for m in metas}
    configs = {m.get("only"): m["config"] for m in metas}
    if any(c != metas[0]["config"] for c in configs.values()):
        meta["config"] = configs  # the parts ran with different settings: keep each
    meta.pop("only", None)
    meta["notes"] = metas[0].get("notes", []) + [
        ("the MRI and the CT tasks ran in separate processes (one thread each) of this script (--only mri, "
         "--only ct), joined with --merge; meta.config holds each part's settings where they differ")]
    out["meta"] = meta
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=["mri", "ct"])
    ap.add_argument("--merge", nargs="+", metavar="PART")
    ap.add_argument("--note", action="append", default=[], help="a note for meta.notes of a merged result")
    ap.add_argument("--json-out")
    ap.add_argument("--md-out")
    args = ap.parse_args(argv)
    if args.merge:
        out = merge(args.merge)
        out["meta"]["notes"] += args.note
        text, md = json.dumps(out, indent=1), markdown(out)
        print(text)
        print(md)
        write_outputs(text, md, args.json_out, args.md_out)
        return
    quick = args.quick
    cfg = {
        "mri_size": 32 if quick else 160,
        "ct_size": 32 if quick else 128,
        # 5 test slices, not the issue's ~10: the full run had to fit a shared 2-core machine
        "test_z": [85, 105] if quick else list(range(75, 125, 10)),
        "tune_z": 65,
        "n_steps": 50,
        "cg_grid": [4, 8, 16, 32, 64, 128],
        "tv_lams": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2],  # times ||A||^2
        "tv_iter": 20 if quick else 100,
        # DDS: gamma (noisy tasks) and CG iterations per step tuned on the tuning slice; eta fixed (on the MRI
        # tuning slice eta in {0.5, 0.85, 1} moved PSNR by <= 0.1 dB: benchmarks/results/dds_tuning.md)
        "gammas": [3.0] if quick else [1.0, 3.0, 10.0, 30.0],
        "dds_cg_iters": [5] if quick else [5, 10],
        "dds_eta": 0.85,
        "dps_steps": 100 if quick else 1000,
        # times 1 / ||A||; c = 4 and 8 can win on the tuning slice yet diverge on test slices (full run, MRI)
        "dps_step_sizes": [1.0] if quick else [0.25, 0.5, 1.0, 2.0],
        # chosen on the MRI tuning slice among (K, d) in {(1, 32), (3, 16), (3, 32), (2, 48), (6, 16), (6, 32),
        # (10, 16)}: benchmarks/results/dds_tuning.md
        "molrg": {"n_components": 6, "subspace_dim": 16},
        "unet": {"base_channels": 8, "channel_mult": [1, 2, 4], "max_steps": 20 if quick else 300, "batch_size": 8,
                 "learning_rate": 2e-3, "ema_decay": 0.99},
    }
    t_start = time.perf_counter()
    vol = load_mni152_t1()
    held = cfg["test_z"] + [cfg["tune_z"]]
    train_z = [z for z in range(30, 160) if min(abs(z - t) for t in held) >= 2]
    out = {}
    rng = np.random.default_rng(0)
    t_fit = {}
    kinds = [k for k in ("mri", "ct") if args.only in (None, k)]
    for kind in kinds:
        size = cfg[f"{kind}_size"]
        X = slices(vol, train_z, size)
        x_test, x_tune = slices(vol, cfg["test_z"], size), slices(vol, [cfg["tune_z"]], size)
        priors = fit_priors(X, cfg, t_fit, kind)
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
                                       "noise_std": 0.01 if noisy else 0.0, "n_test": len(x_test)}
        else:
            phantom = shepp_logan_phantom(size)[None]
            for nv in (30, 8):
                A = ParallelBeamCT((size, size), sparse_view_angles(nv))
                for suffix, xt in (("", x_test), ("_shepp_logan", phantom)):
                    task = f"ct_{nv}_views{suffix}"
                    out[task] = run_task(task, A, A.forward(xt), A.forward(x_tune), xt, x_tune, priors, cfg, False, True)
                    out[task]["_setup"] = {"n_views": nv, "shape": [size, size], "noise_std": 0.0, "n_test": len(xt),
                                           "image": "Shepp-Logan phantom" if suffix else "MNI152 T1 axial slices"}
    out["meta"] = {
        "mode": "quick" if quick else "full",
        "only": args.only,
        "config": cfg,
        "n_train_slices": len(train_z),
        "prior_fit": t_fit,
        "wall_seconds": time.perf_counter() - t_start,
        "notes": [
            ("DPS runs with the MoLRG prior (closed-form VJP); DPS with the U-Net prior (1000 forward and backward "
             "passes per image through the network) is not run: too slow for the 2-core CPU budget"),
            ("quick run: 32 x 32 images, 2 test slices, 100 DPS steps, 20 U-Net training steps: a smoke test of the "
             "script, not a measurement") if quick else
            ("reduced to fit a 2-core machine shared with other jobs: 5 test slices (z = 75, 85, ..., 115) instead "
             "of ~10; the U-Net prior is small and briefly trained (config.unet: steps of batch 8, EMA 0.99) to fit "
             "the CPU budget; it is not a converged diffusion model"),
        ],
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    text, md = json.dumps(out, indent=1), markdown(out)
    print(text)
    print(md)
    write_outputs(text, md, args.json_out, args.md_out)


if __name__ == "__main__":
    main()
