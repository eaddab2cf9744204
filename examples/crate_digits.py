r"""
A white-box CRATE transformer on the digits
===========================================

:class:`~subspacelab.CRATEEncoder` trained on scikit-learn's 8x8 digits (2x2 patches, width 32,
2 layers, 15 epochs). Every layer is one compression step (multi-head subspace self-attention,
a gradient step on the coding rate of the tokens against per-head subspaces) followed by one
sparsification step (ISTA on a non-negative lasso). The figure shows the training loss, the
per-layer compression :math:`\sum_k R_\varepsilon(\bar W_k)` and sparsity of the tokens of
the test images before and after training, and the class-token attention of one image::

    python examples/crate_digits.py [--out crate_digits.png]
"""

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from subspacelab import CRATEEncoder  # noqa: E402
from subspacelab.datasets import load_digits  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--out", default="crate_digits.png")
args = ap.parse_args()

X, y = load_digits(return_images=True)
Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
est = CRATEEncoder(image_shape=(8, 8), patch_size=2, dim=32, depth=2, heads=4, n_epochs=15, lr=3e-3,
                   warmup_epochs=2, random_state=0)
untrained = clone(est).set_params(n_epochs=0).fit(Xtr, ytr)  # the initialisation, no step taken
est.fit(Xtr, ytr)
base = LogisticRegression(max_iter=2000).fit(Xtr.reshape(len(Xtr), -1), ytr)
print(f"CRATE test accuracy {est.score(Xte, yte):.3f}, logistic regression "
      f"{base.score(Xte.reshape(len(Xte), -1), yte):.3f}")

fig, axes = plt.subplots(1, 4, figsize=(13, 3.2))
axes[0].plot(est.loss_curve_)
axes[0].set_xlabel("epoch")
axes[0].set_ylabel("training cross-entropy")
layers = np.arange(1, 3)
for ax, name in ((axes[1], "layerwise_compression"), (axes[2], "layerwise_sparsity")):
    ax.plot(layers, np.asarray(getattr(untrained, name)(Xte)), "o--", label="initialisation")
    ax.plot(layers, np.asarray(getattr(est, name)(Xte)), "o-", label="trained")
    ax.set_xticks(layers)
    ax.set_xlabel("layer")
    ax.set_title(name.replace("layerwise_", "per-layer "), fontsize=9)
axes[1].legend(fontsize=8)
att = np.asarray(est.attention_maps(Xte[:1], layer=-1))[0, :, 0, 1:].mean(axis=0).reshape(4, 4)
axes[3].imshow(Xte[0], cmap="gray_r", extent=(0, 4, 4, 0))
axes[3].imshow(att, cmap="magma", alpha=0.5, extent=(0, 4, 4, 0))
axes[3].set_title(f"class-token attention, last layer (digit {yte[0]})", fontsize=9)
axes[3].set_xticks([])
axes[3].set_yticks([])
fig.tight_layout()
fig.savefig(args.out, dpi=120)
print(f"saved {args.out}")
