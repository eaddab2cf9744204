"""Imaging-operator benchmark: MRI and CT forward+adjoint per backend and kernel, adjoint
mismatch of each, and the MoLRG subspace-recovery phase transition (spec rate_reduction 4.4).

Prints one JSON object

    {"mri": {"shape", "n_coils", "results": {"<backend>": {"seconds_forward_adjoint",
             "adjoint_mismatch_float64", "adjoint_mismatch_float32"}}},
     "ct": {"shape", "n_views", "build_seconds", "results": {"<backend>/<kernel>": {...}},
            "speedup_numba_vs_generic"},
     "molrg": {"n_features", "fit", "grid": [{"n_components", "subspace_dim", "ratio", "n_per_component",
               "success_rate"}], "threshold_ratio": {"K=..,d=..": ratio}},
     "molrg_denoising": {... the same for MoLRGDenoiser(solver="denoising")},
     "meta": {...}}

then a markdown table. Seconds are the best of several repetitions after a warm-up; compare
ratios, not absolute times. The adjoint mismatch is
``|<Ax, y> - <x, A^H y>| / (||Ax|| ||y||)`` for random x, y. The CT anchor is scikit-image's
``radon``/``iradon(filter_name=None)`` pair (not an adjoint pair; shown for its mismatch).
``numpy/numba-1thread`` is the Numba kernel with ``numba.set_num_threads(1)``: on a loaded
machine (more runnable threads than cores) a parallel loop can spend its time waiting at the
barrier, so both are reported.

    python benchmarks/operators.py [--quick] [--json-out FILE] [--md-out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

from subspacelab import MoLRGDenoiser
from subspacelab._backend import to_numpy
from subspacelab.datasets import make_mixture_of_low_rank_gaussians
from subspacelab.kernels import available_backends
from subspacelab.operators import MultiCoilMRI, ParallelBeamCT, birdcage_maps, sampling_mask, sparse_view_angles

from _report import write_outputs


def best_time(fn, repeat, sync=None):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        times.append(time.perf_counter() - t0)
    return min(times)


def namespaces():
    """(name, xp, device, sync) of the array backends to time."""
    import array_api_compat.numpy as xnp

    out = [("numpy", xnp, "cpu", None)]
    try:
        import array_api_compat.torch as xt
        import torch

        out.append(("torch-cpu", xt, torch.device("cpu"), None))
        if torch.cuda.is_available():
            out.append(("torch-cuda", xt, torch.device("cuda"), torch.cuda.synchronize))
    except ImportError:
        pass
    try:
        import cupy

        if cupy.cuda.is_available():
            import array_api_compat.cupy as xc

            out.append(("cupy", xc, None, cupy.cuda.Device().synchronize))
    except ImportError:
        pass
    return out


def mismatch(A, x, y):
    Ax, AHy = to_numpy(A.forward(x)), to_numpy(A.adjoint(y))
    xn, yn = to_numpy(x), to_numpy(y)
    lhs = np.vdot(Ax.astype(np.complex128), yn.astype(np.complex128))
    rhs = np.vdot(xn.astype(np.complex128), AHy.astype(np.complex128))
    return float(abs(lhs - rhs) / (np.linalg.norm(Ax) * np.linalg.norm(yn)))


def bench_mri(n, n_coils, repeat, rng):
    mask = sampling_mask((n, n), "equispaced", acceleration=4, center_fraction=0.08, random_state=0).mask
    res = {}
    for name, xp, dev, sync in namespaces():
        row = {}
        for dt, cdt in (("float64", "complex128"), ("float32", "complex64")):
            maps = birdcage_maps((n, n), n_coils, xp=xp, device=dev, dtype=getattr(xp, cdt))
            A = MultiCoilMRI(xp.asarray(mask, dtype=getattr(xp, dt), device=dev), maps)
            x = xp.asarray(rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n)), dtype=getattr(xp, cdt), device=dev)
            y = xp.asarray(rng.normal(size=A.out_shape) + 1j * rng.normal(size=A.out_shape), dtype=getattr(xp, cdt), device=dev)
            row[f"adjoint_mismatch_{dt}"] = mismatch(A, x, y)
            if dt == "float32":
                row["seconds_forward_adjoint"] = best_time(lambda: A.adjoint(A.forward(x)), repeat, sync)
        res[name] = row
    return res


def bench_ct(n, n_views, repeat, rng):
    angles = sparse_view_angles(n_views)
    t0 = time.perf_counter()
    ParallelBeamCT((n, n), angles)
    build = time.perf_counter() - t0
    res = {}
    for name, xp, dev, sync in namespaces():
        kernels = ["generic"]
        if name == "numpy" and "numba" in available_backends():
            kernels.append("numba")
        if name in ("cupy", "torch-cuda") and "cuda" in available_backends():
            kernels.append("cuda")
        for kern in kernels + (["numba-1thread"] if "numba" in kernels else []):
            row = {}
            threads = None
            if kern == "numba-1thread":  # Numba's parallel loop on one thread: no barrier waits on a loaded machine
                import numba

                threads, kern_used = numba.get_num_threads(), "numba"
                numba.set_num_threads(1)
            else:
                kern_used = kern
            for dt in ("float64", "float32"):
                A = ParallelBeamCT((n, n), angles, xp=xp, device=dev, dtype=getattr(xp, dt), backend=kern_used)
                x = xp.asarray(rng.random((n, n)), dtype=getattr(xp, dt), device=dev)
                y = xp.asarray(rng.random(A.out_shape), dtype=getattr(xp, dt), device=dev)
                row[f"adjoint_mismatch_{dt}"] = mismatch(A, x, y)
                if dt == "float32":
                    row["seconds_forward_adjoint"] = best_time(lambda: A.adjoint(A.forward(x)), repeat, sync)
            if threads is not None:
                numba.set_num_threads(threads)
            res[f"{name}/{kern}"] = row
    try:
        from skimage.transform import iradon, radon

        x = rng.random((n, n))
        yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
        x[(yy**2 + xx**2) > (n / 2) ** 2] = 0  # radon(circle=True) needs zero outside the circle
        theta = np.asarray(angles)
        s = radon(x, theta)
        y = rng.random(s.shape)
        bp = iradon(y, theta, filter_name=None, output_size=n)
        inside = (yy**2 + xx**2) <= (n / 2) ** 2
        lhs, rhs = np.vdot(s, y), np.vdot(x, bp * inside)
        res["skimage radon/iradon (anchor)"] = {
            "adjoint_mismatch_float64": float(abs(lhs - rhs) / (np.linalg.norm(s) * np.linalg.norm(y))),
            "seconds_forward_adjoint": best_time(lambda: iradon(radon(x, theta), theta, filter_name=None, output_size=n), repeat),
        }
    except ImportError:
        pass
    out = {"shape": [n, n], "n_views": n_views, "build_seconds": build, "results": res}
    if "numpy/numba" in res:
        gen = res["numpy/generic"]["seconds_forward_adjoint"]
        out["speedup_numba_vs_generic"] = gen / res["numpy/numba"]["seconds_forward_adjoint"]
        out["speedup_numba_1thread_vs_generic"] = gen / res["numpy/numba-1thread"]["seconds_forward_adjoint"]
    return out


def subspace_error(true, est):
    from itertools import permutations

    best = np.inf
    for perm in permutations(range(len(true))):
        err = max(np.linalg.norm(U @ U.T - est[p] @ est[p].T) / np.sqrt(2 * U.shape[1]) for U, p in zip(true, perm))
        best = min(best, err)
    return best


def bench_molrg(Ks, dims, ratios, seeds, D=48, **fit_params):
    if fit_params.get("solver") == "denoising":  # tiny torch problems: one thread is fastest
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return _bench_molrg(Ks, dims, ratios, seeds, D, **fit_params)
        finally:
            torch.set_num_threads(threads)
    return _bench_molrg(Ks, dims, ratios, seeds, D, **fit_params)


def _bench_molrg(Ks, dims, ratios, seeds, D, **fit_params):
    grid, threshold = [], {}
    for K in Ks:
        for d in dims:
            if K * d > D:
                continue
            first = None
            seen = set()
            for r in ratios:
                n_per = max(1, int(r * d + 1e-9))  # floor: N_k never rounds up past the ratio
                if n_per in seen:
                    continue
                seen.add(n_per)
                r = n_per / d
                ok = 0
                for seed in seeds:
                    X, _, bases = make_mixture_of_low_rank_gaussians([n_per] * K, D, K, d, random_state=seed)
                    m = MoLRGDenoiser(K, d, **{"n_init": 10, **fit_params}, random_state=seed).fit(X)
                    est = [np.asarray(m.subspaces_[k, :, :d]) for k in range(K)]
                    ok += subspace_error(bases, est) < 0.1
                rate = ok / len(seeds)
                grid.append({"n_components": K, "subspace_dim": d, "ratio": r, "n_per_component": n_per, "success_rate": rate})
                if first is None and rate >= 0.5:
                    first = r
            threshold[f"K={K},d={d}"] = first
    return {"n_features": D, "success": "subspace error < 0.1 (spec 4.4)", "fit": fit_params or {"solver": "ksubspaces"},
            "grid": grid, "threshold_ratio": threshold}


# solver="denoising": the paper's training problem by Adam with a Stiefel retraction (torch)
DAE = {"solver": "denoising", "n_init": 3, "max_iter": 300}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="the issue's operator sizes with fewer repeats and a smaller MoLRG grid (about a minute)")
    parser.add_argument("--json-out")
    parser.add_argument("--md-out")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    if args.quick:
        mri = bench_mri(256, 8, 2, rng)
        mri_shape = 256
        ct = bench_ct(256, 60, 2, rng)
        molrg = bench_molrg([1, 2], [4, 8], [0.5, 0.75, 1.0, 1.25, 1.5, 2.0], range(3))
        molrg_dae = bench_molrg([2], [4], [0.75, 1.0, 2.0, 3.0], range(2), **DAE)
    else:
        mri = bench_mri(256, 8, 5, rng)
        mri_shape = 256
        ct = bench_ct(256, 60, 5, rng)
        molrg = bench_molrg([1, 2, 3], [2, 4, 8, 12], [0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0], range(10))
        molrg_dae = bench_molrg([1, 2], [4, 8], [0.75, 1.0, 2.0, 3.0], range(3), **DAE)
    results = {
        "mri": {"shape": [mri_shape, mri_shape], "n_coils": 8, "mask": "equispaced x4, 8% ACS", "results": mri},
        "ct": ct,
        "molrg": molrg,
        "molrg_denoising": molrg_dae,
        "meta": {
            "quick": args.quick,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "numba_threads": __import__("numba").config.NUMBA_NUM_THREADS,
            "load_average_at_end": os.getloadavg(),
            "note": "seconds are best-of-repeat wall-clock (float32 data); compare ratios, not absolute times",
        },
    }
    text = json.dumps(results, indent=2)
    print(text)
    lines = ["| operator | backend/kernel | forward+adjoint (s) | adjoint mismatch f64 | f32 |", "|---|---|---|---|---|"]
    for name, r in mri.items():
        lines.append(f"| MRI {mri_shape}², 8 coils | {name} | {r['seconds_forward_adjoint']:.3e} | "
                     f"{r['adjoint_mismatch_float64']:.1e} | {r['adjoint_mismatch_float32']:.1e} |")
    n = ct["shape"][0]
    for name, r in ct["results"].items():
        f32 = r.get("adjoint_mismatch_float32")
        lines.append(f"| CT {n}², {ct['n_views']} views | {name} | {r['seconds_forward_adjoint']:.3e} | "
                     f"{r['adjoint_mismatch_float64']:.1e} | {'n/a' if f32 is None else f'{f32:.1e}'} |")
    if "speedup_numba_vs_generic" in ct:
        lines.append(f"\nCT Numba kernel speed-up over the array-API (generic) NumPy path: "
                     f"{ct['speedup_numba_vs_generic']:.1f}x (default threads), "
                     f"{ct['speedup_numba_1thread_vs_generic']:.1f}x (one thread)\n")
    lines += ["", "| MoLRG K | d | smallest N_k/d_k with success rate >= 0.5: K-subspaces | denoising loss |",
              "|---|---|---|---|"]
    for key, r in molrg["threshold_ratio"].items():
        K, d = key.split(",")
        lines.append(f"| {K[2:]} | {d[2:]} | {r} | {molrg_dae['threshold_ratio'].get(key, 'not run')} |")
    md = "\n".join(lines)
    print()
    print(md)
    write_outputs(text, md, args.json_out, args.md_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
