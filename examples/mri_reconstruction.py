"""
Accelerated multi-coil MRI with DDS
===================================

Accelerated multi-coil MRI of an MNI152 T1 axial slice: zero-filled, CG-SENSE, TV (ADMM) and
DDS with a MoLRG prior fitted on other slices of the template. 8 birdcage coils, equispaced x8
mask with 4 % ACS, complex noise 0.01. Saves mri_reconstruction.png (needs matplotlib and the
nilearn wheel for the template)::

    python examples/mri_reconstruction.py [--size 96] [--out mri_reconstruction.png]
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))  # for _recon_figure
from _recon_figure import save_figure  # noqa: E402

from subspacelab import DDSReconstructor, MoLRGDenoiser  # noqa: E402
from subspacelab.datasets import load_mni152_t1, resize_image  # noqa: E402
from subspacelab.diffusion.baselines import adjoint_reconstruction, least_squares, tv_admm  # noqa: E402
from subspacelab.operators import MultiCoilMRI, birdcage_maps, sampling_mask  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--size", type=int, default=96)
ap.add_argument("--out", default="mri_reconstruction.png")
args = ap.parse_args()
size, test_z = args.size, 95

vol = load_mni152_t1()


def axial(z):
    return resize_image(np.ascontiguousarray(np.rot90(vol[:, :, z])), (size, size))


X = np.stack([axial(z) for z in range(30, 160) if abs(z - test_z) >= 2])
x = axial(test_z)[None]
m = sampling_mask((size, size), "equispaced", acceleration=8, center_fraction=0.04, random_state=0).mask
A = MultiCoilMRI(m, birdcage_maps((size, size), n_coils=8))
rng = np.random.default_rng(0)
y = A.forward(x)
y = y + m * 0.01 * (rng.standard_normal(y.shape) + 1j * rng.standard_normal(y.shape))

prior = MoLRGDenoiser(n_components=3, subspace_dim=16, center=True, n_init=2, random_state=0)
dds = DDSReconstructor(A, prior=prior, n_steps=50, noise_std=0.01, gamma=10.0, random_state=0).fit(X)
recs = {
    "zero-filled": adjoint_reconstruction(A, y)[0],
    "CG-SENSE (8 it.)": least_squares(A, y, n_iter=8)[0],
    "TV (ADMM)": tv_admm(A, y, lam=3e-3, n_iter=100)[0],
    "DDS, MoLRG (50 NFE)": dds.predict(y)[0],
}
save_figure(args.out, x[0], recs, f"MNI152 T1, 8 coils, x{A.acceleration:.1f} equispaced, noise 0.01")
