"""
Blind MR image harmonisation with a normalizing flow
====================================================

Blind harmonisation of MNI152 T1 slices under a smooth bias field: the shifted source, the
three blind baselines (histogram matching, z-score, Nyúl), BlindHarmonizer (defaults: template
standardisation against the nearest target slices), the reference BlindHarmony loop alone
(start from the nearest target slice, the flow's latent shrink), the target, and difference
maps. Only target-domain slices are used (every 5th slice is held out).
Needs nilearn (the MNI152 template) and matplotlib. The gallery runs it with ``--quick``::

    python examples/harmonization.py [--out harmonization.png] [--quick]
"""

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from subspacelab import BlindHarmonizer  # noqa: E402
from subspacelab.datasets import DomainShift, load_mni152_axial_slices  # noqa: E402
from subspacelab.harmonization import histogram_matching, nyul_normalize, zscore_normalize  # noqa: E402
from subspacelab.metrics import psnr, ssim  # noqa: E402

ap = argparse.ArgumentParser(description="Blind MR image harmonisation with a normalizing flow")
ap.add_argument("--out", default="harmonization.png", help="figure file")
ap.add_argument("--quick", action="store_true", help="32 x 32 slices and a tiny flow (about a minute)")
args = ap.parse_args()

size = 32 if args.quick else 64
X = load_mni152_axial_slices(size)
test_idx = np.arange(2, X.shape[0], 5)
train, test = np.delete(X, test_idx, axis=0), X[test_idx][[4, 10, 16]]
source = DomainShift("bias_field", random_state=0)(test)

small = dict(levels=2, steps_per_level=2, hidden_channels=16, max_steps=60) if args.quick else {}
est = BlindHarmonizer(n_threads=1, random_state=0, verbose=1, **small).fit(train)
outs = {
    "source (bias field)": source,
    "histogram matching": histogram_matching(source, train),
    "z-score": zscore_normalize(source, train),
    "Nyúl": nyul_normalize(source, train),
    "BlindHarmonizer": est.transform(source),
    "reference loop": est.set_params(standardize=False, init="nearest_target", alpha=1e-3,
                                     beta_edge=1e-3).transform(source),
}
fig, axes = plt.subplots(2 * len(test), len(outs) + 1, figsize=(2.2 * (len(outs) + 1), 4.4 * len(test)))
for r, truth in enumerate(test):
    for c, (name, img) in enumerate(outs.items()):
        p = float(psnr(truth, img[r], data_range=1.0))
        s = float(ssim(truth, img[r], data_range=1.0))
        axes[2 * r, c].imshow(img[r], cmap="gray", vmin=0, vmax=1)
        axes[2 * r, c].set_title(f"{name}\n{p:.1f} dB, SSIM {s:.3f}", fontsize=7)
        axes[2 * r + 1, c].imshow(img[r] - truth, cmap="RdBu_r", vmin=-0.2, vmax=0.2)
        print(f"slice {r}: {name:20s} PSNR {p:.2f} dB  SSIM {s:.4f}")
    axes[2 * r, -1].imshow(truth, cmap="gray", vmin=0, vmax=1)
    axes[2 * r, -1].set_title("target", fontsize=7)
    axes[2 * r + 1, -1].axis("off")
for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
axes[1, 0].set_ylabel("difference to target\n(-0.2 ... 0.2)", fontsize=7)
fig.tight_layout()
fig.savefig(args.out, dpi=110)
print(f"saved {args.out}")
