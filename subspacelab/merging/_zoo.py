"""A small, real model-merging setting: one pre-trained MLP, several fine-tuned copies and heads."""

from __future__ import annotations

import copy

import numpy as np
from sklearn.utils import Bunch

from .._backend import check_random_state, lazy_import
from .._validation import check_param

__all__ = ["make_task_models", "task_accuracies"]


def _tensor(a, dtype=None):
    torch = lazy_import("torch")
    return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)


def _train(params, loss_fn, X, y, *, epochs, lr, batch_size, generator):
    torch = lazy_import("torch")
    opt = torch.optim.Adam(params, lr=lr)
    X, y = _tensor(X, torch.float32), _tensor(y, torch.int64)
    for _ in range(epochs):
        order = torch.randperm(X.shape[0], generator=generator)
        for start in range(0, X.shape[0], batch_size):
            idx = order[start : start + batch_size]
            opt.zero_grad()
            loss_fn(X[idx], y[idx]).backward()
            opt.step()


def make_task_models(
    data,
    *,
    hidden=256,
    n_features=32,
    pretrain_epochs=10,
    head_epochs=30,
    finetune_epochs=5,
    finetune_learning_rate=3e-4,
    batch_size=64,
    random_state=0,
):
    r"""Pre-train an MLP on one task, then fine-tune a copy per task, each with its own head.

    This reproduces, at CPU size, the setting of the model-merging papers (a pre-trained
    encoder, a frozen classification head per task, a fine-tuned encoder per task):

    1. the backbone ``Linear(d, hidden) - ReLU - Linear(hidden, n_features) - ReLU`` and a
       linear head are trained on ``data.pretrain`` (Adam, learning rate 1e-3,
       ``pretrain_epochs``);
    2. for every task, a linear head is fitted on the frozen pre-trained features of the
       task's training split (Adam, learning rate 1e-2, ``head_epochs``) -- the analogue of a
       zero-shot head;
    3. a copy of the backbone is fine-tuned on the task with that head frozen (Adam,
       ``finetune_learning_rate``, ``finetune_epochs``).

    Parameters
    ----------
    data : Bunch
        As returned by :func:`subspacelab.datasets.make_digit_tasks`: ``data.pretrain`` with
        ``X_train``, ``y_train``; ``data.tasks`` a list of Bunch with ``X_train``, ``y_train``
        and ``n_classes``. Inputs are 2-D (samples x features).
    hidden, n_features : int
        Widths of the backbone's two layers.
    pretrain_epochs, head_epochs, finetune_epochs : int
    finetune_learning_rate : float
    batch_size : int
    random_state : int, numpy.random.Generator or None
        Seeds the initialisation and the order of the mini-batches (torch's global random
        state is left as it was).

    Returns
    -------
    zoo : Bunch
        ``pretrained`` (the backbone), ``pretrained_head`` (its head for the pre-training
        task), ``models`` (one fine-tuned backbone per task) and ``heads`` (one frozen
        ``torch.nn.Linear`` per task), all in eval mode with gradients disabled.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.utils import Bunch
    >>> from subspacelab.merging import make_task_models
    >>> rng = np.random.default_rng(0)
    >>> task = Bunch(X_train=rng.random((40, 6)), y_train=rng.integers(0, 3, 40), n_classes=3)
    >>> data = Bunch(pretrain=Bunch(X_train=rng.random((40, 6)), y_train=rng.integers(0, 2, 40)), tasks=[task])
    >>> zoo = make_task_models(data, hidden=8, n_features=4, pretrain_epochs=1, head_epochs=1, finetune_epochs=1)
    >>> len(zoo.models), zoo.heads[0].out_features
    (1, 3)
    """
    torch = lazy_import("torch")
    if torch is None:
        raise ImportError("make_task_models trains torch networks: pip install torch")
    nn, F = torch.nn, torch.nn.functional
    for name, value in (
        ("hidden", hidden),
        ("n_features", n_features),
        ("pretrain_epochs", pretrain_epochs),
        ("head_epochs", head_epochs),
        ("finetune_epochs", finetune_epochs),
        ("batch_size", batch_size),
    ):
        check_param(name, value, "int", low=1)
    check_param("finetune_learning_rate", finetune_learning_rate, "real", low=0.0, closed="neither")
    rng = check_random_state(random_state)
    X0, y0 = np.asarray(data.pretrain.X_train), np.asarray(data.pretrain.y_train)
    if X0.ndim != 2 or X0.shape[0] != y0.shape[0] or X0.shape[0] == 0:
        raise ValueError(f"data.pretrain must hold a non-empty 2-D X_train and matching y_train, got {X0.shape} and {y0.shape}")
    d = X0.shape[1]
    for t, task in enumerate(data.tasks):
        Xt = np.asarray(task.X_train)
        if Xt.ndim != 2 or Xt.shape[1] != d or Xt.shape[0] != len(task.y_train) or Xt.shape[0] == 0:
            raise ValueError(f"data.tasks[{t}].X_train must be (n, {d}) with n > 0 labels, got {Xt.shape}")
    gen = torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(rng.integers(0, 2**63 - 1)))
        backbone = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, n_features), nn.ReLU())
        head0 = nn.Linear(n_features, int(y0.max()) + 1)
        heads = [nn.Linear(n_features, int(task.n_classes)) for task in data.tasks]
    _train(
        [*backbone.parameters(), *head0.parameters()],
        lambda x, y: F.cross_entropy(head0(backbone(x)), y),
        X0,
        y0,
        epochs=pretrain_epochs,
        lr=1e-3,
        batch_size=batch_size,
        generator=gen,
    )
    backbone.eval().requires_grad_(False)
    models = []
    for task, head in zip(data.tasks, heads):
        with torch.no_grad():
            features = backbone(_tensor(task.X_train, torch.float32))
        _train(
            head.parameters(),
            lambda x, y, head=head: F.cross_entropy(head(x), y),
            features,
            task.y_train,
            epochs=head_epochs,
            lr=1e-2,
            batch_size=batch_size,
            generator=gen,
        )
        head.eval().requires_grad_(False)
        model = copy.deepcopy(backbone).requires_grad_(True).train()
        _train(
            model.parameters(),
            lambda x, y, head=head, model=model: F.cross_entropy(head(model(x)), y),
            task.X_train,
            task.y_train,
            epochs=finetune_epochs,
            lr=finetune_learning_rate,
            batch_size=batch_size,
            generator=gen,
        )
        models.append(model.eval().requires_grad_(False))
    return Bunch(pretrained=backbone, pretrained_head=head0.eval().requires_grad_(False), models=models, heads=heads)


def task_accuracies(model, heads, tasks, split="test"):
    """Accuracy of ``heads[t](model(X))`` on every task's ``split``, as a NumPy array.

    Parameters
    ----------
    model : torch.nn.Module, or a list of modules (one per task)
    heads : list of callables
    tasks : list of Bunch with ``X_<split>`` and ``y_<split>``
    split : {"train", "val", "test"}

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from sklearn.utils import Bunch
    >>> from subspacelab.merging import task_accuracies
    >>> backbone = torch.nn.Identity()
    >>> backbone.register_parameter("w", torch.nn.Parameter(torch.zeros(())))  # gives a dtype
    >>> tasks = [Bunch(X_test=np.eye(3), y_test=np.array([0, 1, 2])),
    ...          Bunch(X_test=np.eye(3), y_test=np.array([2, 1, 0]))]
    >>> heads = [lambda Z: Z, lambda Z: Z.flip(-1)]
    >>> task_accuracies(backbone, heads, tasks)
    array([1., 1.])
    """
    torch = lazy_import("torch")
    check_param("split", split, "option", options=("train", "val", "test"))
    if len(heads) != len(tasks):
        raise ValueError(f"heads ({len(heads)}) and tasks ({len(tasks)}) must have the same length")
    models = list(model) if isinstance(model, (list, tuple)) else [model] * len(tasks)
    if len(models) != len(tasks):
        raise ValueError(f"model lists ({len(models)}) and tasks ({len(tasks)}) must have the same length")
    out = []
    with torch.no_grad():
        for m, head, task in zip(models, heads, tasks):
            p = next(m.parameters())
            X = _tensor(task[f"X_{split}"]).to(dtype=p.dtype, device=p.device)
            pred = head(m(X)).argmax(dim=-1).cpu().numpy()
            out.append(float(np.mean(pred == np.asarray(task[f"y_{split}"]))))
    return np.asarray(out)
