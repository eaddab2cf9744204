"""weighted_logdet kernel: MLC's n coding-rate terms, every implementation, one process.

Prints one JSON object

    {"<size>": {"rate_py": s, "generic": s, "numba": s, "cuda": s | null,
                "speedup_numba_vs_generic": r, "speedup_numba_vs_rate_py": r}, "meta": {...}}

and a markdown table. ``rate_py`` is subspacelab.rate.compressed_coding_rate with the n x n
membership as soft clusters (chunked broadcasting, the pre-kernel way); the kernels compute the
same log-determinants (the value of R^c is checked equal). Seconds are best of ``repeat`` after
a warm-up (Numba compilation) on NumPy float64 inputs; ``cuda`` is timed only on a real GPU.

    python benchmarks/weighted_logdet.py [--quick] [--json-out FILE] [--md-out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

from subspacelab.kernels import sinkhorn, weighted_logdet
from subspacelab.kernels._dispatch import available_backends, cudasim_enabled
from subspacelab.rate import compressed_coding_rate

from _report import write_outputs


def best(fn, repeat):
    fn()
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json-out")
    parser.add_argument("--md-out")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    sizes = [(256, 16), (512, 32)] if args.quick else [(256, 16), (512, 32), (1024, 32), (1024, 64)]
    repeat = 2 if args.quick else 3
    eps_sq = 0.1
    results = {}
    for n, d in sizes:
        Z = rng.normal(size=(n, d))
        Z /= np.linalg.norm(Z, axis=1, keepdims=True)
        G = sinkhorn(np.abs(Z @ Z.T), 0.1, tol=1e-9).plan
        beta = d / eps_sq
        rc = float(compressed_coding_rate(Z, G, eps_sq=eps_sq))
        row = {"rate_py": best(lambda: compressed_coding_rate(Z, G, eps_sq=eps_sq), repeat)}
        for impl in ("generic", "numba"):
            t = G.sum(axis=0)
            got = float(np.sum(t * weighted_logdet(Z, G / t, beta, backend=impl).logdet)) / (2 * n)
            assert abs(got - rc) <= 1e-9 * abs(rc), (impl, got, rc)
            row[impl] = best(lambda: weighted_logdet(Z, G, beta, backend=impl), repeat)
        row["cuda"] = None
        if "cuda" in available_backends() and not cudasim_enabled():
            import cupy

            Zc, Gc = cupy.asarray(Z), cupy.asarray(G)

            def on_gpu():
                weighted_logdet(Zc, Gc, beta, backend="cuda")
                cupy.cuda.Device().synchronize()

            row["cuda"] = best(on_gpu, repeat)
        row["speedup_numba_vs_generic"] = row["generic"] / row["numba"]
        row["speedup_numba_vs_rate_py"] = row["rate_py"] / row["numba"]
        results[f"n={n},d={d}"] = row
    results["meta"] = {
        "quick": args.quick,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "numba_threads": __import__("numba").config.NUMBA_NUM_THREADS,
        "note": "shared 2-core CPU; compare ratios, not absolute times",
    }
    text = json.dumps(results, indent=2)
    print(text)
    lines = ["| size | rate.py (s) | generic (s) | numba (s) | numba vs generic | numba vs rate.py |", "|---|---|---|---|---|---|"]
    for size, r in results.items():
        if size == "meta":
            continue
        lines.append(
            f"| {size} | {r['rate_py']:.3f} | {r['generic']:.3f} | {r['numba']:.3f} | "
            f"{r['speedup_numba_vs_generic']:.1f}x | {r['speedup_numba_vs_rate_py']:.1f}x |"
        )
    md = "\n".join(lines)
    print()
    print(md)
    write_outputs(text, md, args.json_out, args.md_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
