"""Kernel benchmark: every available implementation of each kernel, same inputs, one process.

Prints one JSON object

    {"<kernel>": {"<size>": {"generic": s, "numba": s, "cuda": s | null,
                             "speedup_numba_vs_generic": ratio}}, "meta": {...}}

(seconds are the best of several repetitions after a warm-up call that compiles the Numba
kernels), then a markdown table. ``generic`` runs on NumPy. ``cuda`` is timed only on a real
GPU with CuPy inputs; under the CUDA simulator it would time Python threads, so it is null.

    python benchmarks/kernels.py [--quick] [--json-out FILE] [--md-out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

from subspacelab.kernels import sinkhorn, soft_threshold
from subspacelab.kernels._dispatch import cudasim_enabled, available_backends

from _report import write_outputs


def best_time(fn, repeat):
    fn()  # warm-up: compiles Numba kernels, fills caches
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def cuda_inputs(x):
    """A CuPy copy of x when a real GPU is usable, else None."""
    if cudasim_enabled() or "cuda" not in available_backends():
        return None
    try:
        import cupy

        return cupy.asarray(x) if cupy.cuda.is_available() else None
    except ImportError:
        return None


def run_case(call, x, repeat):
    out = {}
    for impl in ("generic", "numba"):
        out[impl] = best_time(lambda: call(x, impl), repeat)
    xc = cuda_inputs(x)
    if xc is not None:
        import cupy

        def on_gpu():
            call(xc, "cuda")
            cupy.cuda.Device().synchronize()

        out["cuda"] = best_time(on_gpu, repeat)
    else:
        out["cuda"] = None
    out["speedup_numba_vs_generic"] = out["generic"] / out["numba"]
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, runs in well under a minute")
    parser.add_argument("--json-out")
    parser.add_argument("--md-out")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    repeat = 3 if args.quick else 5

    if args.quick:
        sink_sizes = [(1, 128), (1, 512), (16, 64)]
        soft_sizes = [10**4, 10**5, 10**6]
    else:
        sink_sizes = [(1, 256), (1, 1024), (1, 2048), (64, 128)]
        soft_sizes = [10**5, 10**6, 10**7]

    results = {"sinkhorn": {}, "soft_threshold": {}}
    # Sinkhorn: MLC's setting, |cosine| affinities of unit vectors, eta = 0.175, 50 half-iterations.
    for batch, n in sink_sizes:
        c = rng.normal(size=(batch, n, 32))
        c /= np.linalg.norm(c, axis=-1, keepdims=True)
        a = np.abs(c @ np.swapaxes(c, -1, -2))
        key = f"batch={batch},n={n}"
        results["sinkhorn"][key] = run_case(
            lambda x, impl: sinkhorn(x, 0.175, n_iter=50, tol=None, backend=impl), a, repeat
        )
    for size in soft_sizes:
        x = rng.normal(size=size)
        results["soft_threshold"][f"n={size}"] = run_case(
            lambda x, impl: soft_threshold(x, 0.3, backend=impl), x, repeat
        )

    results["meta"] = {
        "quick": args.quick,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "numba_threads": __import__("numba").config.NUMBA_NUM_THREADS,
        "load_average_1min": os.getloadavg()[0],
        "note": "seconds are best-of-repeat wall-clock; compare ratios, not absolute times",
    }
    text = json.dumps(results, indent=2)
    print(text)
    lines = ["| kernel | size | generic (s) | numba (s) | cuda (s) | numba speed-up |", "|---|---|---|---|---|---|"]
    for kernel in ("sinkhorn", "soft_threshold"):
        for size, r in results[kernel].items():
            cuda = "n/a" if r["cuda"] is None else f"{r['cuda']:.2e}"
            lines.append(
                f"| {kernel} | {size} | {r['generic']:.2e} | {r['numba']:.2e} | {cuda} | {r['speedup_numba_vs_generic']:.1f}x |"
            )
    md = "\n".join(lines)
    print()
    print(md)
    write_outputs(text, md, args.json_out, args.md_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
