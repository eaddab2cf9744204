"""Torch machinery shared by the mergers that learn from unlabelled inputs.

The merged model is evaluated functionally (``torch.func.functional_call``) on merged weights
that are differentiable functions of the merging coefficients and of the mask logits; the
objective is the prediction entropy of every task head on a batch of that task's unlabelled
inputs, summed over the tasks.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from .._backend import get_namespace, lazy_import, move_to
from .._validation import check_finite
from ._weights import check_count


class EntropyObjective:
    """Sum over tasks t of the mean prediction entropy of ``head_t(model(x))`` on task t's inputs.

    Parameters
    ----------
    weights : Weights
        Collected module weights (``weights.kind == "module"``).
    X_unlabelled : list of arrays
        One array of inputs per task (first axis = samples), any array-API library.
    heads : list of callables or None
        ``heads[t]`` maps the model's output to task t's logits; None means the model's output
        already is the logits of every task.
    batch_size : int or None
        Inputs per task and step (None: all of them; at most the task's number of inputs).
        Each task's inputs are visited in a fresh random order every pass, as a shuffled data
        loader with ``drop_last`` does (a pass ends when fewer than a batch remain).
    rng : numpy.random.Generator
    """

    def __init__(self, weights, X_unlabelled, heads, batch_size, rng):
        torch = lazy_import("torch")
        import array_api_compat.torch as txp

        n_tasks = weights.n_tasks
        p0 = weights.theta0[0]
        self.torch = torch
        self.names = weights.names
        self.dtype, self.device = p0.dtype, p0.device
        self.module = copy.deepcopy(weights.pretrained).eval().requires_grad_(False)
        if heads is None:
            self.heads = None
        else:
            heads = check_count(heads, "heads", n_tasks)
            self.heads = []
            for t, h in enumerate(heads):
                if not callable(h):
                    raise TypeError(f"heads[{t}] must be callable (a torch module or a function), got {type(h).__name__}")
                if isinstance(h, torch.nn.Module):
                    h = copy.deepcopy(h).eval().requires_grad_(False)
                self.heads.append(h)
        if X_unlabelled is None:
            raise ValueError(
                "X_unlabelled is required: one array of unlabelled inputs per model, drawn from each "
                "task's distribution (never from the split used for evaluation)"
            )
        X_unlabelled = check_count(X_unlabelled, "X_unlabelled", n_tasks)
        self.data = []
        for t, X in enumerate(X_unlabelled):
            name = f"X_unlabelled[{t}]"
            xp, _ = get_namespace(X, names=[name])
            if X.ndim < 1 or X.shape[0] == 0:
                raise ValueError(f"{name} must hold at least one input (first axis = samples), got shape {tuple(X.shape)}")
            if xp.isdtype(X.dtype, "bool") or xp.isdtype(X.dtype, "complex floating"):
                raise TypeError(f"{name} must have a real numeric dtype, got {X.dtype}")
            if xp.isdtype(X.dtype, "real floating"):
                check_finite(X, name, xp)
            X = move_to(X, txp, self.device)
            if isinstance(X, torch.Tensor):
                X = X.detach()
            self.data.append(X.to(self.dtype))
        self.batch_size = batch_size
        self.rng = rng
        self._order = [np.empty(0, dtype=np.int64) for _ in self.data]
        self._pos = [0 for _ in self.data]

    def batches(self):
        """One batch per task (the whole set when ``batch_size`` is None)."""
        if self.batch_size is None:
            return list(self.data)
        out = []
        for t, X in enumerate(self.data):
            n = X.shape[0]
            size = min(self.batch_size, n)
            if self._pos[t] + size > self._order[t].shape[0]:
                self._order[t] = self.rng.permutation(n)
                self._pos[t] = 0
            idx = self._order[t][self._pos[t] : self._pos[t] + size]
            self._pos[t] += size
            out.append(X[self.torch.as_tensor(idx, device=self.device)])
        return out

    def __call__(self, tensors, batches):
        """Summed mean prediction entropy of the model holding ``tensors`` (one per parameter)."""
        torch = self.torch
        params = dict(zip(self.names, tensors))
        total = 0.0
        for t, x in enumerate(batches):
            out = torch.func.functional_call(self.module, params, (x,))
            logits = out if self.heads is None else self.heads[t](out)
            logp = torch.log_softmax(logits, dim=-1)
            total = total + (-(logp.exp() * logp).sum(dim=-1)).mean()
        return total


def combine(theta0, tau, coefficients, factors=None):
    """theta0[l] + sum_i coefficients[i, l or 0] * tau[l][i] (times ``factors[l]`` when given)."""
    torch = lazy_import("torch")
    layerwise = coefficients.shape[1] > 1
    out = []
    for l, (p0, t) in enumerate(zip(theta0, tau)):
        lam = coefficients[:, l if layerwise else 0]
        delta = torch.tensordot(lam, t, dims=1)
        if factors is not None:
            delta = delta * factors[l]
        out.append(p0 + delta)
    return out


def concrete_sample(logits, temperature, generator):
    """Relaxed Bernoulli (binary Concrete) samples m = sigmoid((z + L) / t), one per logit.

    ``L = log u - log(1 - u)`` with u ~ U(0, 1) is Logistic(0, 1) noise, drawn independently
    for every weight from ``generator`` (u is kept in [2**-24, 1 - 2**-24], the range of
    float32 uniforms, so that L stays finite). ``m > 1/2`` exactly when ``z + L > 0``, which
    has probability sigmoid(z) at every temperature.
    """
    torch = lazy_import("torch")
    out = []
    for z in logits:
        u = torch.rand(z.shape, generator=generator, dtype=z.dtype, device=z.device)
        out.append(torch.sigmoid((z + torch.logit(u, eps=2**-24)) / temperature))
    return out


def rescale(masks):
    """Masks divided by their mean, per tensor (an all-ones mask stays all ones)."""
    return [m / m.mean() for m in masks]


def concrete_factors(logits, temperature, generator):
    """Rescaled relaxed masks m / mean(m) of :func:`concrete_sample`."""
    return rescale(concrete_sample(logits, temperature, generator))


def expected_factors(logits):
    """Deterministic mask sigmoid(z), rescaled per tensor: sigmoid(z) / mean(sigmoid(z))."""
    torch = lazy_import("torch")
    return rescale([torch.sigmoid(z) for z in logits])


def torch_generator(rng, device):
    torch = lazy_import("torch")
    gen = torch.Generator(device=device)
    gen.manual_seed(int(rng.integers(0, 2**63 - 1)))
    return gen


def report(estimator, phase, step, n_steps, loss):
    if estimator.verbose and (step + 1 == n_steps or (step + 1) % max(1, n_steps // 10) == 0):
        print(f"{type(estimator).__name__} {phase} step {step + 1}/{n_steps}: prediction entropy {loss:.5f}")


def check_loss(curve, tol, estimator, phase):
    """Raise on a non-finite loss; warn when it was still falling over the last quarter of steps.

    The criterion compares the mean loss over the last quarter of the steps with the mean over
    the quarter before; a relative decrease larger than ``tol`` means more steps would still
    lower the objective.
    """
    if not np.all(np.isfinite(curve)):
        raise FloatingPointError(
            f"{type(estimator).__name__}: the prediction entropy became non-finite during the {phase} "
            "phase; lower the learning rate"
        )
    n = len(curve) // 4
    if tol is None or n == 0:
        return
    last, before = float(np.mean(curve[-n:])), float(np.mean(curve[-2 * n : -n]))
    drop = (before - last) / max(abs(before), np.finfo(float).tiny)
    if drop > tol:
        warnings.warn(
            f"{type(estimator).__name__}: the prediction entropy of the {phase} phase still fell by "
            f"{100 * drop:.2g}% over the last quarter of the steps (tol={tol}); consider more steps",
            ConvergenceWarning,
            stacklevel=3,
        )
