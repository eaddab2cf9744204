"""Checked access to the weights being merged: pre-trained weights and task vectors.

Two kinds of input are accepted by every merger:

* torch modules of one architecture (``torch.nn.Module``): the merged quantities are the
  module's parameters (``named_parameters()``), in their dtype and on their device;
* plain weight vectors: 1-D floating arrays of any array-API library, all in one namespace
  and on one device.

torch is imported only when the inputs are torch objects.
"""

from __future__ import annotations

import copy
import dataclasses

from .._backend import get_namespace, is_array_api_obj, lazy_import
from .._validation import check_finite


@dataclasses.dataclass
class Weights:
    """Pre-trained weights ``theta0`` and the task vectors ``tau`` of T fine-tuned models.

    ``theta0[l]`` is the l-th weight tensor (one per module parameter, a single one for plain
    vectors) and ``tau[l]`` the stacked task vectors of shape ``(T, *theta0[l].shape)``:
    ``tau[l][i] = theta_i[l] - theta0[l]``. ``finetuned[l]`` stacks the fine-tuned weights
    themselves, kept for task arithmetic's exact form.
    """

    kind: str  # "module" or "array"
    xp: object
    names: list
    theta0: list
    finetuned: list
    pretrained: object  # the module or the array passed as ``pretrained``

    @property
    def n_tasks(self):
        return self.finetuned[0].shape[0]

    @property
    def tau(self):
        return [f - p[None, ...] for f, p in zip(self.finetuned, self.theta0)]

    def pack(self, tensors):
        """Per-weight tensors in the user's layout: a dict by parameter name, or the array."""
        if self.kind == "array":
            return tensors[0]
        return dict(zip(self.names, tensors))

    def build(self, tensors):
        """The merged model: a copy of the pre-trained module holding ``tensors``, or the array."""
        if self.kind == "array":
            return tensors[0]
        torch = lazy_import("torch")
        merged = copy.deepcopy(self.pretrained)
        params = dict(merged.named_parameters())
        with torch.no_grad():
            for name, value in zip(self.names, tensors):
                params[name].copy_(value)
        return merged


def is_module(obj):
    """Whether ``obj`` is a torch module (torch is imported only when obj's class comes from it)."""
    if not any(c.__module__.startswith("torch.") for c in type(obj).__mro__):
        return False
    return isinstance(obj, lazy_import("torch").nn.Module)


def collect_weights(models, pretrained):
    """Validate ``models`` against ``pretrained`` and return their :class:`Weights`.

    Raises
    ------
    ValueError
        Missing pre-trained weights, no models, architectures (parameter names, shapes, dtypes,
        devices, buffers) that differ, non-finite weights.
    TypeError
        Inputs that are neither torch modules nor arrays, or a mix of the two.
    """
    if pretrained is None:
        raise ValueError(
            "pretrained is required: task vectors are fine-tuned minus pre-trained weights, "
            "so the pre-trained model (or weight vector) must be given; got None"
        )
    if is_array_api_obj(models) or isinstance(models, (str, bytes)) or not hasattr(models, "__len__"):
        raise TypeError(
            "models must be a list of fine-tuned models (torch modules or weight vectors), "
            f"got {type(models).__name__}"
        )
    models = list(models)
    if not models:
        raise ValueError("models must hold at least one fine-tuned model, got an empty list")
    if is_module(pretrained):
        return _collect_modules(models, pretrained)
    if is_array_api_obj(pretrained):
        return _collect_arrays(models, pretrained)
    raise TypeError(
        "pretrained must be a torch.nn.Module or a 1-D floating weight array, "
        f"got {type(pretrained).__name__}"
    )


def _collect_arrays(models, pretrained):
    for i, m in enumerate(models):
        if not is_array_api_obj(m):
            raise TypeError(
                f"models[{i}] must be a weight array like pretrained, got {type(m).__name__}"
            )
    names = ["pretrained"] + [f"models[{i}]" for i in range(len(models))]
    xp, _ = get_namespace(pretrained, *models, names=names)
    for name, a in zip(names, [pretrained, *models]):
        if a.ndim != 1:
            raise ValueError(f"{name} must be a 1-D weight vector, got shape {tuple(a.shape)}")
        if not xp.isdtype(a.dtype, "real floating"):
            raise TypeError(f"{name} must have a real floating dtype, got {a.dtype}")
        if a.shape[0] == 0:
            raise ValueError(f"{name} must not be empty")
        if a.shape != pretrained.shape or a.dtype != pretrained.dtype:
            raise ValueError(
                f"{name} has shape {tuple(a.shape)} and dtype {a.dtype}, but pretrained has shape "
                f"{tuple(pretrained.shape)} and dtype {pretrained.dtype}: all weight vectors must match"
            )
        check_finite(a, name, xp)
    return Weights(
        kind="array",
        xp=xp,
        names=["weights"],
        theta0=[pretrained],
        finetuned=[xp.stack(models)],
        pretrained=pretrained,
    )


def _collect_modules(models, pretrained):
    torch = lazy_import("torch")
    import array_api_compat.torch as xp

    ref = dict(pretrained.named_parameters())
    if not ref:
        raise ValueError("pretrained has no parameters to merge")
    ref_buffers = dict(pretrained.named_buffers())
    for name, p in ref.items():
        if not p.is_floating_point():
            raise TypeError(f"parameter {name!r} of pretrained has dtype {p.dtype}; merging needs floating weights")
    for i, m in enumerate(models):
        if not isinstance(m, torch.nn.Module):
            raise TypeError(f"models[{i}] must be a torch.nn.Module like pretrained, got {type(m).__name__}")
        params = dict(m.named_parameters())
        missing, extra = sorted(set(ref) - set(params)), sorted(set(params) - set(ref))
        if missing or extra:
            raise ValueError(
                f"models[{i}] has a different architecture from pretrained: parameters missing "
                f"{missing}, unexpected {extra}"
            )
        for name, p0 in ref.items():
            p = params[name]
            if p.shape != p0.shape or p.dtype != p0.dtype or p.device != p0.device:
                raise ValueError(
                    f"models[{i}] has a different architecture from pretrained: parameter {name!r} is "
                    f"{tuple(p.shape)} {p.dtype} on {p.device}, pretrained's is "
                    f"{tuple(p0.shape)} {p0.dtype} on {p0.device}"
                )
        buffers = dict(m.named_buffers())
        if set(buffers) != set(ref_buffers):
            raise ValueError(
                f"models[{i}] has a different architecture from pretrained: buffers "
                f"{sorted(buffers)} versus {sorted(ref_buffers)}"
            )
        for name, b0 in ref_buffers.items():
            b = buffers[name]
            if b.shape != b0.shape or not torch.equal(b, b0.to(b.device)):
                raise ValueError(
                    f"buffer {name!r} of models[{i}] differs from the pre-trained one; the mergers "
                    "combine parameters only, so buffers (BatchNorm statistics, for example) must "
                    "equal the pre-trained model's"
                )
    theta0, finetuned = [], []
    with torch.no_grad():
        for name, p0 in ref.items():
            stacked = torch.stack([dict(m.named_parameters())[name].detach() for m in models])
            check_finite(p0.detach(), f"parameter {name!r} of pretrained", xp)
            check_finite(stacked, f"parameter {name!r} of a fine-tuned model", xp)
            theta0.append(p0.detach().clone())
            finetuned.append(stacked.clone())
    return Weights(
        kind="module",
        xp=xp,
        names=list(ref),
        theta0=theta0,
        finetuned=finetuned,
        pretrained=pretrained,
    )


def check_count(value, name, n_tasks):
    """Check that sequence ``value`` has one entry per task."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or is_array_api_obj(value):
        raise TypeError(f"{name} must be a list with one entry per model, got {type(value).__name__}")
    if len(value) != n_tasks:
        raise ValueError(f"{name} must have one entry per model ({n_tasks}), got {len(value)}")
    return list(value)
