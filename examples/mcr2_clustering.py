r"""
Clustering a union of warped subspaces with MCR2Clusterer
=========================================================

Three 3-dimensional subspaces of :math:`\mathbb R^{30}`, each bent by a smooth nonlinear warp,
60 points each. :class:`~subspacelab.MCR2Clusterer` (MLC, network solver) learns an embedding
on the sphere and a doubly stochastic membership :math:`\Gamma`, then clusters by spectral
clustering of :math:`\Gamma`; k-means on the raw data is the baseline. The figure shows the
learned membership and the absolute cosine similarity of the embedding, both with the samples
sorted by their true subspace (block-diagonal is right), and the training loss.

The last panel is a harder case: six overlapping 4-dimensional subspaces, strongly warped and
noisy. There the membership's spectral labels are poor, and the rate-reduction refinement of
the labels (``refine_max_iter``, ``refine_n_init``: greedy descent of the label-block
compressed rate, restarts kept by the smallest rate) recovers the pieces::

    python examples/mcr2_clustering.py [--out mcr2_clustering.png]
"""

import argparse
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402

from subspacelab import MCR2Clusterer  # noqa: E402
from subspacelab.datasets import make_union_of_subspaces  # noqa: E402
from subspacelab.metrics import clustering_accuracy  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--out", default="mcr2_clustering.png")
args = ap.parse_args()

X, y, _ = make_union_of_subspaces(60, (3, 3, 3), 30, noise=0.01, warp=0.5, shuffle=True, random_state=0)
est = MCR2Clusterer(3, feature_dim=16, hidden_dim=64, n_epochs=40, batch_size=60, random_state=0)
labels = est.fit_predict(X)
km = KMeans(n_clusters=3, n_init=10, random_state=0).fit_predict(X)
print(f"MCR2Clusterer accuracy {clustering_accuracy(y, labels):.3f}, k-means {clustering_accuracy(y, km):.3f}")

# the harder case: fixed features (membership solver), spectral labels versus refined labels
X2, y2, _ = make_union_of_subspaces(60, (4,) * 6, 30, overlap=0.7, warp=2.0, noise=0.1, random_state=0)
common = dict(solver="membership", eps_sq=0.5, random_state=0)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)  # a few mirror-descent iterations suffice here
    plain = MCR2Clusterer(6, **common).fit(X2)
    refined = MCR2Clusterer(6, refine_max_iter=100, refine_n_init=10, **common).fit(X2)
hard = {
    "k-means": clustering_accuracy(y2, KMeans(n_clusters=6, n_init=10, random_state=0).fit_predict(X2)),
    "spectral\nlabels": clustering_accuracy(y2, plain.labels_),
    "refined\nlabels": clustering_accuracy(y2, refined.labels_),
}
print("overlapping subspaces: " + ", ".join(f"{k.replace(chr(10), ' ')} {v:.3f}" for k, v in hard.items()))

order = np.argsort(y, kind="stable")
G = np.asarray(est.membership(X))[np.ix_(order, order)]
Z = np.asarray(est.embedding_)[order]
fig, axes = plt.subplots(1, 4, figsize=(14, 3.4))
axes[0].imshow(G, cmap="viridis")
axes[0].set_title(r"membership $\Gamma$ (sorted by true subspace)", fontsize=9)
axes[1].imshow(np.abs(Z @ Z.T), cmap="viridis", vmin=0, vmax=1)
axes[1].set_title(r"$|Z Z^\top|$ of the learned embedding", fontsize=9)
for ax in axes[:2]:
    ax.set_xticks([])
    ax.set_yticks([])
axes[2].plot(est.loss_curve_)
axes[2].set_xlabel("training step")
axes[2].set_ylabel("MLC loss")
axes[2].set_title(f"accuracy {clustering_accuracy(y, labels):.2f} (k-means {clustering_accuracy(y, km):.2f})", fontsize=9)
axes[3].bar(list(hard), list(hard.values()), color=["0.6", "tab:blue", "tab:green"])
axes[3].set_ylim(0, 1)
axes[3].set_ylabel("accuracy")
axes[3].set_title("6 overlapping warped subspaces", fontsize=9)
fig.tight_layout()
fig.savefig(args.out, dpi=120)
print(f"saved {args.out}")
