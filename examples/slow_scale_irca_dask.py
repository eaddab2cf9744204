"""
Per-pixel calibration of a chunked detector cube with Dask
==========================================================

Per-pixel Fabry–Perot calibration of a chunked detector cube on a Dask LocalCluster.

    python examples/slow_scale_irca_dask.py [--side 24]

A calibration cube of shape (interferometers, side, side, sources) is simulated, wrapped as a
Dask array chunked over interferometers and image rows, and calibrated pixel by pixel:
IRCACalibrator.fit maps the in-memory per-pixel fit (batched Levenberg–Marquardt kernel) over
the chunks with map_blocks, and only the per-pixel parameters come back. The result equals the
in-memory fit, which the script checks on the first interferometer.

On a real cluster, connect Client("tcp://scheduler:8786") instead of the LocalCluster and read
the cube where the workers can (e.g. da.from_zarr, or da.stack of per-acquisition loaders);
chunk it over pixels, never over sources (fit joins the sources of a pixel into one chunk).
"""

import argparse
import time

import dask.array as da
import numpy as np
from distributed import Client, LocalCluster

from subspacelab import IRCACalibrator
from subspacelab.datasets import make_fabry_perot_acquisition


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--side", type=int, default=24)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    acq = make_fabry_perot_acquisition(4, 200, noise=0.01, subimage_shape=(args.side, args.side), fov=2.0,
                                       random_state=0)
    cube = da.from_array(acq.data, chunks=(1, max(1, args.side // 4), args.side, -1))
    n_pix = int(np.prod(acq.data.shape[:-1]))
    print(f"cube {acq.data.shape}, {cube.npartitions} chunks, {n_pix} pixels")
    params = {"opd_init": acq.opd_nominal, "opd_span": 0.01, "degrees": {"reflectivity": 1, "gain": 2}}
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster):
        t0 = time.perf_counter()
        cal = IRCACalibrator(**params).fit(cube, acq.wavenumbers, flat=acq.flat)
        elapsed = time.perf_counter() - t0
    print(f"calibrated {n_pix} pixels in {elapsed:.1f} s ({n_pix / elapsed:.0f} pixels/s, "
          f"{args.workers} workers, first call includes the workers' start-up and kernel loading)")
    err = np.abs(cal.opd_ - acq.opd)
    print(f"OPD error: median {np.median(err):.2e} µm, max {err.max():.2e} µm")
    ref = IRCACalibrator(**{**params, "opd_init": acq.opd_nominal[:1]}).fit(acq.data[:1], acq.wavenumbers,
                                                                               flat=acq.flat)
    print("equal to the in-memory fit of interferometer 0:", bool(np.array_equal(ref.opd_, cal.opd_[:1])))


if __name__ == "__main__":
    main()
