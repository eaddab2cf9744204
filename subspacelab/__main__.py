"""Command line: ``python -m subspacelab demo | info | bench NAME [--quick]``.

* ``demo`` runs every public estimator that defines ``demo_row()`` in its module on packaged
  or embedded data and prints one table row each: method, data, metric, value, the baseline's
  value, seconds. A row for the rate-reduction maths on scikit-learn's digits comes first.
* ``info`` tells the version, which array backends and which kernel fast paths are usable.
* ``bench NAME`` runs ``benchmarks/NAME.py`` of a source checkout.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import os
import runpy
import sys
import time
from pathlib import Path

from . import _ESTIMATORS, __version__


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _probe(label, dist, usable):
    version = _version(dist)
    if version is None:
        return label, "-", "not installed"
    try:
        status = usable()
    except Exception as exc:  # noqa: BLE001 - report any failure as unusable
        status = f"installed, unusable: {type(exc).__name__}: {exc}"
    return label, version, status


def _torch_status():
    import torch

    return "usable (CPU" + (f", CUDA: {torch.cuda.get_device_name()})" if torch.cuda.is_available() else ", no CUDA device)")


def _cupy_status():
    import cupy

    return "usable (CUDA device)" if cupy.cuda.is_available() else "installed, no CUDA device"


def _strict_status():
    import array_api_strict

    array_api_strict.asarray([1.0])
    return "usable"


def _dask_status():
    import dask.array as da

    da.ones(2).sum().compute()
    return "usable"


def _numba_status():
    import numba

    numba.njit(lambda x: x + 1)(1)
    return "usable (CPU kernels)"


def _cuda_status():
    from .kernels._dispatch import cuda_available, cudasim_enabled

    if cudasim_enabled():
        return "CUDA simulator on (NUMBA_ENABLE_CUDASIM=1): CUDA kernels run on the CPU"
    return "usable (CUDA device)" if cuda_available() else "no CUDA device (set NUMBA_ENABLE_CUDASIM=1 to simulate)"


def info():
    rows = [
        ("subspacelab", __version__, "python " + sys.version.split()[0]),
        _probe("numpy", "numpy", lambda: "usable"),
        _probe("torch", "torch", _torch_status),
        _probe("cupy", "cupy-cuda12x", _cupy_status) if _version("cupy-cuda12x") else _probe("cupy", "cupy", _cupy_status),
        _probe("array_api_strict", "array-api-strict", _strict_status),
        _probe("dask", "dask", _dask_status),
        ("-- kernel fast paths --", "", ""),
        _probe("numba (CPU)", "numba", _numba_status),
        _probe("numba.cuda (GPU)", "numba", _cuda_status),
    ]
    _print_table(("component", "version", "status"), rows)


def _rate_demo_row():
    """Rate reduction of digits features under the true labels versus random labels."""
    import numpy as np
    from sklearn.datasets import load_digits

    from .rate import rate_reduction

    X, y = load_digits(return_X_y=True)
    Z = X - X.mean(axis=0)
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    shuffled = np.random.default_rng(0).permutation(y)
    return {
        "method": "rate_reduction (true labels)",
        "data": "digits 1797x64",
        "metric": "Delta R (nats)",
        "value": float(rate_reduction(Z, y, eps_sq=0.5)),
        "baseline": "shuffled labels",
        "baseline_value": float(rate_reduction(Z, shuffled, eps_sq=0.5)),
    }


def demo():
    jobs = [("rate", _rate_demo_row)]
    seen = set()  # a module defining several estimators has one demo row
    for name, module in sorted(_ESTIMATORS.items()):
        mod = importlib.import_module(module, __package__)
        if hasattr(mod, "demo_row") and module not in seen:
            seen.add(module)
            jobs.append((name, mod.demo_row))
    rows = []
    for _, job in jobs:
        t0 = time.perf_counter()
        r = job()
        seconds = time.perf_counter() - t0
        rows.append(
            (r["method"], r["data"], r["metric"], f"{r['value']:.4g}", r["baseline"], f"{r['baseline_value']:.4g}", f"{seconds:.2f}")
        )
    _print_table(("method", "data", "metric", "value", "baseline", "baseline value", "seconds"), rows)
    missing = sorted(n for n, m in _ESTIMATORS.items() if m not in seen)
    if not _ESTIMATORS:
        print("\nNo estimator has landed yet; the row above exercises subspacelab.rate.")
    elif missing:
        print("\nEstimators without a demo row: " + ", ".join(missing))


def bench(name, extra):
    root = Path(__file__).resolve().parent.parent / "benchmarks"
    script = root / f"{name}.py"
    if not script.is_file():
        available = sorted(p.stem for p in root.glob("*.py")) if root.is_dir() else []
        raise SystemExit(
            f"no benchmark {name!r}: benchmarks live in a source checkout"
            + (f"; available: {', '.join(available)}" if available else "")
        )
    sys.argv = [str(script), *extra]
    sys.path.insert(0, str(root))  # as `python benchmarks/NAME.py` would: scripts share _report.py
    runpy.run_path(str(script), run_name="__main__")


def _print_table(header, rows):
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = " | ".join(h.ljust(w) for h, w in zip(header, widths))
    print(line)
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(str(c).ljust(w) for c, w in zip(r, widths)))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m subspacelab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run every estimator on packaged data and print a table")
    sub.add_parser("info", help="version, usable backends and kernel fast paths")
    b = sub.add_parser("bench", help="run benchmarks/NAME.py of a source checkout")
    b.add_argument("name")
    args, extra = parser.parse_known_args(argv)
    if args.command == "bench":
        bench(args.name, extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    elif args.command == "demo":
        demo()
    else:
        info()


if __name__ == "__main__":
    os.environ.setdefault("SCIPY_ARRAY_API", "1")
    main()
