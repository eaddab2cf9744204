"""
Low-rank matrix completion on three array libraries
===================================================

Complete a 500 x 500 rank-5 matrix from 6 % of its entries. Fits AltMinCompleter on the same observations held as a NumPy array, an array_api_strict array
and a torch tensor (scikit-learn's array_api_dispatch keeps the work and the fitted attributes
in the input's library), prints the relative error of each completion and their agreement,
and saves the training-RMSE curve to altmin_completion.png when matplotlib is installed::

    SCIPY_ARRAY_API=1 python examples/altmin_completion.py [--out altmin_completion.png]
"""

import argparse
import os

os.environ.setdefault("SCIPY_ARRAY_API", "1")  # must precede the first import of scipy

import numpy as np  # noqa: E402
import sklearn  # noqa: E402

from subspacelab import AltMinCompleter  # noqa: E402
from subspacelab._backend import to_numpy  # noqa: E402
from subspacelab.datasets import make_low_rank_matrix_completion, oversampling_to_probability  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--out", default="altmin_completion.png")
args = ap.parse_args()

m = n = 500
k = 5
data = make_low_rank_matrix_completion(m, n, k, sampling=oversampling_to_probability(m, n, k, 3.0), random_state=0)
M = data.U @ data.V.T
print(f"observed {np.mean(~np.isnan(data.X)):.1%} of a {m} x {n} rank-{k} matrix")

results = {}
est = AltMinCompleter(rank=k, random_state=0)
results["numpy"] = est.fit_transform(data.X)
print(f"numpy: {est.n_iter_} iterations, stop reason {est.stop_reason_!r}")

with sklearn.config_context(array_api_dispatch=True):
    try:
        import array_api_strict

        results["array_api_strict"] = to_numpy(AltMinCompleter(rank=k, random_state=0).fit_transform(array_api_strict.asarray(data.X)))
    except ImportError:
        print("array_api_strict is not installed")
    try:
        import torch

        results["torch"] = to_numpy(AltMinCompleter(rank=k, random_state=0).fit_transform(torch.asarray(data.X)))
    except ImportError:
        print("torch is not installed")

for name, M_hat in results.items():
    err = np.linalg.norm(M_hat - M) / np.linalg.norm(M)
    dev = np.max(np.abs(M_hat - results["numpy"]))
    print(f"{name:>16}: relative error {err:.1e}, max deviation from the numpy fit {dev:.1e}")

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.semilogy(est.objective_curve_, "o-")
    ax.set_xlabel("iteration")
    ax.set_ylabel("train RMSE on observed entries")
    ax.set_title("AltMinCompleter, exact recovery")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"saved {args.out}")
except ImportError:
    pass
