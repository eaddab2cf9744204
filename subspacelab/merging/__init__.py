"""Model merging in a shared subspace: task arithmetic, TIES, AdaMerging, Concrete subspace masks.

Several models fine-tuned from one pre-trained model (one task each) are merged into one
multi-task model by arithmetic on their task vectors, tau_i = theta_i - theta_0. The mergers
take torch modules of one architecture (or, for the closed-form ones, plain weight vectors of
any array-API library) and follow scikit-learn's conventions with
``fit(models, pretrained, X_unlabelled=None, heads=None)``; they are not registered as
estimators (``fit`` takes models, not a data matrix).

* :class:`TaskArithmeticMerger` -- theta_0 + lambda * sum_i tau_i
* :class:`TiesMerger` -- trim, elect sign, disjoint merge
* :class:`AdaMerger` -- coefficients learned by minimising the prediction entropy
* :class:`ConcreteMaskMerger` -- a shared mask on the task vectors learned through a Concrete
  relaxation, on top of task arithmetic or AdaMerging

:func:`make_task_models` builds the small real setting of the benchmark from the tasks of
:func:`subspacelab.datasets.make_digit_tasks`: an MLP pre-trained on MNIST digits and
fine-tuned on other digit tasks, each with its own frozen head; :func:`task_accuracies`
scores a model on every task.

torch is imported only when torch objects are passed (``import subspacelab.merging`` does not
import it).
"""

from ._mergers import AdaMerger, ConcreteMaskMerger, TaskArithmeticMerger, TiesMerger
from ._zoo import make_task_models, task_accuracies

__all__ = [
    "AdaMerger",
    "ConcreteMaskMerger",
    "TaskArithmeticMerger",
    "TiesMerger",
    "make_task_models",
    "task_accuracies",
]
