"""
Coherent inpainting of faces with CoPaint
=========================================

Inpainting of scikit-image's LFW faces (25 x 25): CoPaint-TT against replacement and DDS-style
projection under one MoLRG prior fitted on the other faces, with box, half and random-stroke
masks. Saves inpainting.png (needs matplotlib and scikit-image)::

    python examples/inpainting.py [--out inpainting.png]
"""

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from skimage.data import lfw_subset  # noqa: E402

from subspacelab import CoPaintInpainter, MoLRGDenoiser  # noqa: E402
from subspacelab.diffusion.copaint import projection_inpaint, replacement_inpaint  # noqa: E402
from subspacelab.metrics import boundary_mismatch  # noqa: E402
from subspacelab.operators import inpainting_mask  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--out", default="inpainting.png")
args = ap.parse_args()

faces = lfw_subset()  # (200, 25, 25), values in [0, 1], bundled with scikit-image
rng = np.random.default_rng(0)
perm = rng.permutation(len(faces))
train, test = faces[perm[:190]], faces[perm[190:194]]
n, shape = len(test), faces.shape[1:]

inp = CoPaintInpainter(prior=MoLRGDenoiser(n_components=3, subspace_dim=20, center=True, n_init=3),
                       n_steps=50, random_state=0).fit(train)
rows = []
for name in ("box", "half", "strokes"):
    M = inpainting_mask(name, shape, n, random_state=1)
    flat_y, flat_m = (test * M).reshape(n, -1), M.reshape(n, -1)
    outs = {
        "CoPaint-TT": inp.predict(test * M, M),
        "replacement": replacement_inpaint(inp.prior_, flat_y, flat_m, n_steps=50, random_state=0)[0].reshape(test.shape),
        "DDS projection": projection_inpaint(inp.prior_, flat_y, flat_m, n_steps=50, random_state=0)[0].reshape(test.shape),
    }
    for method, out in outs.items():
        print(f"{name:8s} {method:15s} boundary mismatch {float(np.mean(boundary_mismatch(out, test, M))):.4f}")
    rows.append((name, test * M + (1 - M) * 0.5, outs))

fig, axes = plt.subplots(len(rows) * n, 5, figsize=(7.5, 1.6 * len(rows) * n))
for r, (name, masked, outs) in enumerate(rows):
    for i in range(n):
        ax = axes[r * n + i]
        panels = [("masked", masked[i])] + [(k, v[i]) for k, v in outs.items()] + [("truth", test[i])]
        for a, (title, img) in zip(ax, panels):
            a.imshow(np.clip(img, 0, 1), cmap="gray", vmin=0, vmax=1)
            a.set_xticks([])
            a.set_yticks([])
            if r * n + i == 0:
                a.set_title(title, fontsize=8)
        ax[0].set_ylabel(name, fontsize=8)
fig.tight_layout()
fig.savefig(args.out, dpi=120)
print(f"saved {args.out}")
