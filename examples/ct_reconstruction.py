"""
Sparse-view CT with DDS
=======================

Sparse-view CT (8 views, parallel beam, matched Joseph projector) of an MNI152 T1 axial slice:
FBP, CGLS, TV (ADMM) and DDS with a MoLRG prior fitted on other slices. Saves
ct_reconstruction.png (needs matplotlib and the nilearn wheel)::

    python examples/ct_reconstruction.py [--size 96] [--views 8] [--out ct_reconstruction.png]
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))  # for _recon_figure
from _recon_figure import save_figure  # noqa: E402

from subspacelab import DDSReconstructor, MoLRGDenoiser  # noqa: E402
from subspacelab.datasets import load_mni152_t1, resize_image  # noqa: E402
from subspacelab.diffusion.baselines import least_squares, tv_admm  # noqa: E402
from subspacelab.operators import ParallelBeamCT, sparse_view_angles  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--size", type=int, default=96)
ap.add_argument("--views", type=int, default=8)
ap.add_argument("--out", default="ct_reconstruction.png")
args = ap.parse_args()
size, test_z = args.size, 95

vol = load_mni152_t1()


def axial(z):
    return resize_image(np.ascontiguousarray(np.rot90(vol[:, :, z])), (size, size))


X = np.stack([axial(z) for z in range(30, 160) if abs(z - test_z) >= 2])
x = axial(test_z)[None]
A = ParallelBeamCT((size, size), sparse_view_angles(args.views))
y = A.forward(x)

prior = MoLRGDenoiser(n_components=3, subspace_dim=16, center=True, n_init=2, random_state=0)
dds = DDSReconstructor(A, prior=prior, n_steps=50, random_state=0).fit(X)
recs = {
    "FBP": A.fbp(y)[0],
    "CGLS (16 it.)": least_squares(A, y, n_iter=16)[0],
    "TV (ADMM)": tv_admm(A, y, lam=3e-3, n_iter=100)[0],
    "DDS, MoLRG (50 NFE)": dds.predict(y)[0],
}
save_figure(args.out, x[0], recs, f"MNI152 T1, parallel-beam CT, {args.views} views, noiseless")
