"""Shared figure helper of the reconstruction examples (ground truth, reconstructions, error maps)."""

import numpy as np

from subspacelab.metrics import psnr, ssim


def save_figure(path, truth, recs, title):
    """One column per image: ground truth then each reconstruction (PSNR/SSIM in the title),
    and below each reconstruction its absolute error map (shared colour scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(recs) + 1
    fig, axes = plt.subplots(2, n, figsize=(2.6 * n, 5.4), constrained_layout=True)
    axes[0, 0].imshow(truth, cmap="gray", vmin=0, vmax=1)
    axes[0, 0].set_title("ground truth", fontsize=9)
    axes[1, 0].axis("off")
    emax = max(float(np.abs(r - truth).max()) for r in recs.values())
    for j, (name, rec) in enumerate(recs.items(), start=1):
        p = float(psnr(truth, rec, data_range=1.0))
        s = float(ssim(truth, rec, data_range=1.0))
        axes[0, j].imshow(rec, cmap="gray", vmin=0, vmax=1)
        axes[0, j].set_title(f"{name}\n{p:.2f} dB / SSIM {s:.3f}", fontsize=9)
        im = axes[1, j].imshow(np.abs(rec - truth), cmap="magma", vmin=0, vmax=emax)
        axes[1, j].set_title(f"|error| {name}", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[1, 1:], shrink=0.8, label="absolute error")
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=150)
    print(f"saved {path}")
    return fig  # left open: the documentation gallery captures open figures
