r"""
Merging fine-tuned models: task arithmetic, TIES and Concrete masks
===================================================================

A small MLP pre-trained on MNIST digits is fine-tuned on three tasks (digits rotated by 90°,
inverted, and scikit-learn's 8x8 digits upsampled), one copy per task. The copies are merged
into one backbone by task arithmetic (:math:`\theta_0 + \lambda\sum_i\tau_i`), TIES (trim,
elect a sign, disjoint mean) and Concrete task arithmetic (a shared mask on the task vectors,
learned by minimising the prediction entropy on unlabelled inputs). The figure shows the test
accuracy of every task under each merged model, with the pre-trained and fine-tuned models as
lower and upper references::

    python examples/model_merging.py [--out model_merging.png]
"""

import argparse
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402

from subspacelab.datasets import make_digit_tasks  # noqa: E402
from subspacelab.merging import (  # noqa: E402
    ConcreteMaskMerger,
    TaskArithmeticMerger,
    TiesMerger,
    make_task_models,
    task_accuracies,
)

ap = argparse.ArgumentParser()
ap.add_argument("--out", default="model_merging.png")
args = ap.parse_args()
torch.set_num_threads(1)  # tiny networks: more threads only add synchronisation

names = ["rotate90", "invert", "digits8x8"]
data = make_digit_tasks(names)
zoo = make_task_models(data)
unlabelled = [t.X_unlabelled for t in data.tasks]
concrete = ConcreteMaskMerger(random_state=0)
with warnings.catch_warnings():
    # the default 2000 mask steps stop while the entropy still falls slowly (the paper's budget)
    warnings.simplefilter("ignore", ConvergenceWarning)
    concrete.fit(zoo.models, zoo.pretrained, unlabelled, zoo.heads)
results = {
    "pre-trained": task_accuracies(zoo.pretrained, zoo.heads, data.tasks),
    "task arithmetic": task_accuracies(
        TaskArithmeticMerger(scaling=0.3).fit(zoo.models, zoo.pretrained).merged_model_, zoo.heads, data.tasks),
    "TIES": task_accuracies(TiesMerger().fit(zoo.models, zoo.pretrained).merged_model_, zoo.heads, data.tasks),
    "Concrete TA": task_accuracies(concrete.merged_model_, zoo.heads, data.tasks),
    "fine-tuned (one per task)": task_accuracies(zoo.models, zoo.heads, data.tasks),
}
for method, acc in results.items():
    print(f"{method:>26}: " + "  ".join(f"{a:.3f}" for a in acc) + f"   mean {np.mean(acc):.3f}")

fig, ax = plt.subplots(figsize=(10, 3.4))
width = 0.8 / len(results)
for j, (method, acc) in enumerate(results.items()):
    ax.bar(np.arange(len(names)) + j * width, acc, width, label=f"{method} ({np.mean(acc):.2f})")
ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names)
ax.set_ylabel("test accuracy")
ax.set_ylim(0, 1)
ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
fig.tight_layout()
fig.savefig(args.out, dpi=120)
print(f"saved {args.out}")
