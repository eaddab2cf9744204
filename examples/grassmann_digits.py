r"""
Classifying with one subspace per class: GrassmannClassifier
============================================================

:class:`~subspacelab.GrassmannClassifier` represents each class by a :math:`k`-dimensional
subspace :math:`S_c` (a point of the Grassmannian) and scores a sample by the norm of its
projection, :math:`\lVert S_c^\top x\rVert`; the subspaces are trained by Riemannian SGD on the
cross-entropy. :class:`~subspacelab.SoftmaxVectorClassifier` is the same model with one vector
per class (:math:`k = 1` without the norm), trained the same way. On scikit-learn's digits the
figure shows test accuracy against the subspace dimension, and the training loss::

    python examples/grassmann_digits.py [--out grassmann_digits.png]
"""

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from subspacelab import GrassmannClassifier, SoftmaxVectorClassifier  # noqa: E402
from subspacelab.datasets import load_digits  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--out", default="grassmann_digits.png")
args = ap.parse_args()

X, y = load_digits()
Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
vec = SoftmaxVectorClassifier(random_state=0).fit(Xtr, ytr)
dims = [1, 2, 4, 8]
fits = {k: GrassmannClassifier(subspace_dim=k, random_state=0).fit(Xtr, ytr) for k in dims}
acc = {k: est.score(Xte, yte) for k, est in fits.items()}
for k in dims:
    print(f"GrassmannClassifier k={k}: test accuracy {acc[k]:.3f}")
print(f"SoftmaxVectorClassifier: test accuracy {vec.score(Xte, yte):.3f}")

fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
axes[0].plot(dims, [acc[k] for k in dims], "o-", label="GrassmannClassifier")
axes[0].axhline(vec.score(Xte, yte), color="gray", ls="--", label="SoftmaxVectorClassifier")
axes[0].set_xscale("log", base=2)
axes[0].set_xticks(dims, [str(k) for k in dims])
axes[0].set_xlabel("subspace dimension k")
axes[0].set_ylabel("test accuracy")
axes[0].legend(fontsize=8)
for k in (1, 8):
    axes[1].plot(fits[k].loss_curve_, label=f"Grassmann k={k}")
axes[1].plot(vec.loss_curve_, label="softmax vector")
axes[1].set_xlabel("epoch")
axes[1].set_ylabel("training loss")
axes[1].legend(fontsize=8)
fig.tight_layout()
fig.savefig(args.out, dpi=120)
print(f"saved {args.out}")
