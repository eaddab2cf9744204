"""Scale-out benchmark: AltMinCompleter and per-pixel IRCACalibrator on Dask LocalClusters.

* ``altmin``: AltMinCompleter(rank=10) on a matrix generated chunk by chunk as a Dask array of
  scipy.sparse row chunks (:func:`subspacelab.datasets.make_dask_low_rank_completion`), whose
  dense form would not fit in memory. For 1 and 2 Dask workers: ``seconds_per_iteration``
  (mean over the alternating iterations, from the fit's own per-iteration clock),
  ``setup_seconds`` (reading the chunks into blocks, spectral start and final step: the rest
  of the fit), and ``peak_memory_bytes``, the peak over the fit of the summed resident memory
  of this process (client and scheduler) and the worker processes, sampled every 50 ms, beside
  ``dense_bytes`` (m n 8) and ``observed_bytes`` (24 bytes per observed entry).
* ``irca_per_pixel``: IRCACalibrator per-pixel calibration of a chunked cube (default degrees,
  201 sources, as in benchmarks/irca.py): ``pixels_per_second`` with 1 and 2 workers, and the
  in-memory fit in this process for reference.

Every worker is a process with one thread and ``NUMBA_NUM_THREADS=1``, so 1 worker uses one
core and 2 workers two; the in-memory reference uses this process's Numba threads.

Usage: ``python benchmarks/scale_out.py [--quick] [--json PATH] [--markdown PATH]``; prints
one JSON object, then a markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import sys
import threading
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from subspacelab import AltMinCompleter, IRCACalibrator
from subspacelab.datasets import (
    make_dask_low_rank_completion,
    make_fabry_perot_acquisition,
)

FULL = {"n_rows": 200_000, "n_cols": 50_000, "n_observed": 10_000_000, "rank": 10, "row_chunk": 12_500,
        "n_iter": 3, "irca_interferometers": 4, "irca_side": 64}
QUICK = {"n_rows": 10_000, "n_cols": 4_000, "n_observed": 200_000, "rank": 10, "row_chunk": 2_500,
         "n_iter": 3, "irca_interferometers": 2, "irca_side": 16}
ISSUE_TARGET = {"n_rows": 200_000, "n_cols": 50_000, "n_observed": 20_000_000}


class _PeakRSS:
    """Peak of the summed RSS of a set of processes, sampled in a thread."""

    def __init__(self, pids, interval=0.05):
        import psutil

        self.procs = [psutil.Process(p) for p in pids]
        self.interval = interval
        self.peak = 0
        self.peak_parts = []
        self._stop = threading.Event()

    def sample(self):
        import psutil

        parts = []
        for p in self.procs:
            try:
                parts.append(p.memory_info().rss)
            except psutil.NoSuchProcess:  # a process that ended
                parts.append(0)
        if sum(parts) > self.peak:
            self.peak, self.peak_parts = sum(parts), parts
        return parts

    def __enter__(self):
        self.start = self.sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.sample()
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()
        return False


@contextlib.contextmanager
def _cluster(n_workers):
    from distributed import Client, LocalCluster

    env = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                      memory_limit=0, env=env) as cluster, Client(cluster) as client:
        yield client


def _worker_pids(client):
    return list(client.run(os.getpid).values())


def run_altmin(cfg, client):
    n_workers = len(client.scheduler_info()["workers"])
    data = make_dask_low_rank_completion(cfg["n_rows"], cfg["n_cols"], cfg["rank"], cfg["n_observed"],
                                         row_chunk=cfg["row_chunk"], noise=0.01, random_state=0)
    est = AltMinCompleter(rank=cfg["rank"], n_iter=cfg["n_iter"], tol=0.0, verbose=1, random_state=0)
    warm = make_dask_low_rank_completion(2000, 500, cfg["rank"], 50_000, row_chunk=250, random_state=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # load the kernels in every worker (Numba's on-disk cache) before timing
        AltMinCompleter(rank=cfg["rank"], n_iter=1, random_state=0).fit(warm.X)
    pids = [os.getpid(), *_worker_pids(client)]
    out = io.StringIO()
    with _PeakRSS(pids) as mem, contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: a fixed number of iterations is run
        t0 = time.perf_counter()
        est.fit(data.X)
        total = time.perf_counter() - t0
    clock = [float(s) for s in re.findall(r"\(([0-9.]+) s\)", out.getvalue())]
    loop = clock[-1]
    nnz = int(round(est.sampling_rate_ * cfg["n_rows"] * cfg["n_cols"]))
    return {
        "n_workers": n_workers,
        "seconds_per_iteration": loop / len(clock),
        "n_iter": len(clock),
        "setup_seconds": total - loop,
        "fit_seconds": total,
        "peak_memory_bytes": int(mem.peak),
        "peak_memory_client_bytes": int(mem.peak_parts[0]),
        "peak_memory_workers_bytes": int(sum(mem.peak_parts[1:])),
        "memory_before_fit_bytes": int(sum(mem.start)),
        "n_observed": nnz,
        "train_rmse_last": est.objective_curve_[-1],
    }


def run_irca(cfg, client):
    import dask.array as da

    n_workers = len(client.scheduler_info()["workers"])
    acq = _acquisition(cfg)
    n_pix = int(np.prod(acq.data.shape[:-1]))
    side = cfg["irca_side"]
    cube = da.from_array(acq.data, chunks=(1, max(1, side // 4), side, -1))
    cal = IRCACalibrator(opd_init=acq.opd_nominal, opd_span=0.005)
    # load the kernels in the workers first (Numba's on-disk cache): time the calibration only
    warm = da.from_array(acq.data[:1, :2 * n_workers, :8], chunks=(1, 1, 8, -1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        IRCACalibrator(opd_init=acq.opd_nominal[:1], opd_span=0.005).fit(warm, acq.wavenumbers, flat=acq.flat)
        t0 = time.perf_counter()
        cal.fit(cube, acq.wavenumbers, flat=acq.flat)
        sec = time.perf_counter() - t0
    return {"n_workers": n_workers, "n_pixels": n_pix, "n_chunks": int(cube.npartitions), "seconds": sec,
            "pixels_per_second": n_pix / sec,
            "median_abs_opd_error_um": float(np.median(np.abs(cal.opd_ - acq.opd)))}


def _acquisition(cfg):
    side = cfg["irca_side"]
    return make_fabry_perot_acquisition(cfg["irca_interferometers"], 201, wavenumber_range=(1.0, 2.0), opd_step=0.25,
                                        opd_offset=10.0, subimage_shape=(side, side), fov=1.0, noise=0.01,
                                        random_state=0)


def run_irca_in_memory(cfg):
    acq = _acquisition(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        IRCACalibrator(opd_init=acq.opd_nominal[:1], opd_span=0.005).fit(acq.data[:1, :1, :8], acq.wavenumbers,
                                                                          flat=acq.flat)
        t0 = time.perf_counter()
        IRCACalibrator(opd_init=acq.opd_nominal, opd_span=0.005).fit(acq.data, acq.wavenumbers, flat=acq.flat)
        sec = time.perf_counter() - t0
    n_pix = int(np.prod(acq.data.shape[:-1]))
    import numba

    return {"n_pixels": n_pix, "seconds": sec, "pixels_per_second": n_pix / sec,
            "numba_threads": int(numba.config.NUMBA_NUM_THREADS)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    args = parser.parse_args()
    cfg = QUICK if args.quick else FULL
    t_start = time.perf_counter()
    m, n = cfg["n_rows"], cfg["n_cols"]
    altmin = {"n_rows": m, "n_cols": n, "rank": cfg["rank"], "n_iter": cfg["n_iter"], "row_chunk": cfg["row_chunk"],
              "dense_bytes": m * n * 8, "solver": "exact", "init": "svd", "workers": {}}
    irca = {"n_sources": 201, "configuration": "default degrees (0, 0, 5, 5), opd_span 0.005, nominal OPD per "
            f"sub-image, {cfg['irca_interferometers']} interferometers x {cfg['irca_side']} x {cfg['irca_side']} "
            "pixels, chunks of one interferometer x a quarter of its rows", "workers": {}}
    for w in (1, 2):
        with _cluster(w) as client:
            r = run_altmin(cfg, client)
            irca["workers"][str(w)] = run_irca(cfg, client)
        altmin["workers"][str(w)] = r
        altmin["n_observed"] = r["n_observed"]
        altmin["observed_bytes"] = 24 * r["n_observed"]
        r["peak_memory_fraction_of_dense"] = r["peak_memory_bytes"] / altmin["dense_bytes"]
    w1, w2 = altmin["workers"]["1"], altmin["workers"]["2"]
    altmin["iteration_speedup_2_vs_1"] = w1["seconds_per_iteration"] / w2["seconds_per_iteration"]
    irca["in_memory"] = run_irca_in_memory(cfg)
    irca["throughput_ratio_2_vs_1"] = (irca["workers"]["2"]["pixels_per_second"]
                                       / irca["workers"]["1"]["pixels_per_second"])
    import dask
    import distributed

    reduced = {k: cfg[k] for k in ISSUE_TARGET if cfg[k] != ISSUE_TARGET[k]}
    meta = {
        "mode": "quick" if args.quick else "full",
        "ran": (f"AltMinCompleter rank {cfg['rank']} on {m} x {n} with {altmin['n_observed']} observed entries "
                f"({cfg['n_iter']} iterations, exact solver, spectral start); IRCA per-pixel on "
                f"{irca['workers']['1']['n_pixels']} pixels x 201 sources"),
        "issue_target": ISSUE_TARGET,
        "reduced_from_issue_target": reduced or None,
        "workers": "LocalCluster processes, 1 thread each, NUMBA_NUM_THREADS=1",
        "python": platform.python_version(), "dask": dask.__version__, "distributed": distributed.__version__,
        "cpu_count": os.cpu_count(), "load_average_at_end": list(os.getloadavg()),
        "note": ("shared 2-core machine (other jobs running): compare the 1- and 2-worker rows of one run, "
                 "not absolute times"),
        "seconds_total": None,
    }
    meta["seconds_total"] = time.perf_counter() - t_start
    result = {"meta": meta, "altmin": altmin, "irca_per_pixel": irca}
    text = json.dumps(result, indent=2)
    md = _markdown(result)
    print(text)
    print(md)
    from _report import write_outputs

    write_outputs(text, md, args.json, args.markdown)


def _markdown(res):
    a, p, meta = res["altmin"], res["irca_per_pixel"], res["meta"]
    gb = 1e9
    lines = [f"Scale-out ({meta['mode']}): {meta['ran']}.", ""]
    if meta["reduced_from_issue_target"]:
        lines += [f"Reduced from the issue's target {meta['issue_target']}: {meta['reduced_from_issue_target']}.", ""]
    lines += [f"AltMinCompleter: dense form {a['dense_bytes'] / gb:.1f} GB, observed entries "
              f"{a['observed_bytes'] / 1e6:.0f} MB as (row, col, value) triplets. Peak memory is the summed "
              "resident memory of this process (client, scheduler) and the workers during the fit; "
              "'before fit' is the same sum just before it (Python, NumPy, SciPy, Numba, Dask loaded).", "",
              "| workers | s / iteration | setup s | peak memory (GB) | before fit (GB) | peak / dense |",
              "|---|---|---|---|---|---|"]
    for w, r in a["workers"].items():
        lines.append(f"| {w} | {r['seconds_per_iteration']:.2f} | {r['setup_seconds']:.1f} | "
                     f"{r['peak_memory_bytes'] / gb:.2f} | {r['memory_before_fit_bytes'] / gb:.2f} | "
                     f"{r['peak_memory_fraction_of_dense']:.4f} |")
    lines += ["", f"Iteration speed-up with 2 workers: {a['iteration_speedup_2_vs_1']:.2f}x.", "",
              f"Per-pixel IRCA ({p['configuration']}):", "",
              "| workers | pixels | pixels / s | seconds | median abs OPD error (µm) |", "|---|---|---|---|---|"]
    for w, r in p["workers"].items():
        lines.append(f"| {w} | {r['n_pixels']} | {r['pixels_per_second']:.0f} | {r['seconds']:.1f} | "
                     f"{r['median_abs_opd_error_um']:.2e} |")
    im = p["in_memory"]
    lines += ["", f"In-memory, this process ({im['numba_threads']} Numba threads): {im['pixels_per_second']:.0f} "
              f"pixels/s. Throughput ratio 2 vs 1 workers: {p['throughput_ratio_2_vs_1']:.2f}.", "",
              f"{meta['note']}; load average at the end {meta['load_average_at_end']}."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
