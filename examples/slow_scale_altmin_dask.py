"""
Matrix completion larger than memory with Dask
==============================================

Complete a matrix that is only ever held in pieces: AltMinCompleter on a Dask LocalCluster.

    python examples/slow_scale_altmin_dask.py [--rows 50000] [--cols 10000] [--observed 2000000]

A rank-5 matrix is generated chunk by chunk as a Dask array of scipy.sparse row chunks (stored
entries = observations): no process ever holds the dense matrix, which would take
rows * cols * 8 bytes. AltMinCompleter.fit reads every chunk once into row and column blocks
persisted on the workers and runs blocked alternating least squares: at each half-step the
factors, (rows + cols) * rank numbers, go to the workers, every block solves its own rows or
columns with the in-memory per-row kernel, and only the new factors come back.

On a real cluster, replace LocalCluster(...) by the address of your scheduler
(Client("tcp://scheduler:8786")) and build X from files the workers can read (e.g.
da.from_delayed over per-file loaders, or da.from_zarr of a chunked store); nothing else
changes. The factors must fit in the memory of this (client) process.
"""

import argparse
import time

import numpy as np
from distributed import Client, LocalCluster

from subspacelab import AltMinCompleter
from subspacelab.datasets import make_dask_low_rank_completion


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--cols", type=int, default=10_000)
    parser.add_argument("--observed", type=int, default=2_000_000)
    parser.add_argument("--rank", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    data = make_dask_low_rank_completion(args.rows, args.cols, args.rank, args.observed,
                                         row_chunk=max(1, args.rows // (4 * args.workers)), noise=0.01)
    dense_gb = args.rows * args.cols * 8 / 1e9
    print(f"{args.rows} x {args.cols} matrix, {args.observed} observed entries "
          f"(dense form: {dense_gb:.1f} GB), {data.X.numblocks[0]} row chunks")

    with LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        print("cluster:", client)
        est = AltMinCompleter(rank=args.rank, n_iter=15, tol=1e-4, verbose=1, random_state=0)
        t0 = time.perf_counter()
        est.fit(data.X)
        print(f"fit: {time.perf_counter() - t0:.1f} s, {est.n_iter_} iterations, stop: {est.stop_reason_}")

    # check on fresh entries of the true matrix (the noise level is 0.01)
    rng = np.random.default_rng(1)
    rows = rng.integers(0, args.rows, 10_000)
    cols = rng.integers(0, args.cols, 10_000)
    chunk = data.X.chunks[0][0]
    U = np.concatenate([data.left_factor(b) for b in range(data.X.numblocks[0])])
    truth = np.einsum("ij,ij->i", U[rows], data.right_factor()[cols])
    rmse = np.sqrt(np.mean((est.predict_entries(rows, cols) - truth) ** 2))
    print(f"RMSE on 10 000 unobserved entries: {rmse:.4f} (entries have RMS {np.sqrt(np.mean(truth ** 2)):.3f}; "
          f"row chunk {chunk})")


if __name__ == "__main__":
    main()
