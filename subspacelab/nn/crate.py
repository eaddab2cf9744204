r"""Torch modules of CRATE, the white-box transformer of Yu et al. (NeurIPS 2023).

Each layer is one step of alternating minimisation of the sparse rate reduction

.. math::

    \max_f\; R_\varepsilon(Z) - R^c_\varepsilon(Z \mid U_{[K]}) - \lambda \lVert Z \rVert_1 ,
    \qquad R^c_\varepsilon(Z \mid U_{[K]}) = \sum_k \tfrac12\log\det\bigl(I + \beta (ZU_k)^\top (ZU_k)\bigr),
    \quad \beta = \frac{p}{N\varepsilon^2},

(tokens are rows here, ``(n, N, d)``): the attention block MSSA is an approximate gradient step
on :math:`R^c` and the MLP is replaced by one non-negative ISTA step towards a sparse code in a
dictionary :math:`D`.

Two modes (spec rate_reduction.md §3.1-3.2, discrepancy register row 7):

* ``mode="code"``: exactly the authors' ``model/crate.py``. Shared bias-free ``qkv`` projection
  (queries = keys = values), softmax scale :math:`p^{-1/2}`, untied ``to_out`` Linear with bias,
  ``y = x + MSSA(LN(x))``, ``x = ISTA(LN(y))``, patch embedding LN -> Linear -> LN, ISTA step
  :math:`\eta = 0.1`, :math:`\lambda = 0.1`.
* ``mode="paper"``: the derivation. Tied output :math:`\beta [U_1 \dots U_K]`, no scale inside
  the softmax, :math:`Z^{\ell+1/2} = (1-\kappa\beta) Z^\ell + \kappa\beta\,\mathrm{MSSA}(Z^\ell)`,
  no LayerNorm. ``attention="linear"`` keeps the Gram matrix instead of its softmax: then
  :math:`\beta Z - \beta\,\mathrm{MSSA}(Z)` is exactly the first-order (Neumann) approximation of
  :math:`\nabla_Z R^c` when :math:`\sum_k U_k U_k^\top = I`.

The parameter names are those of the pure array-API forward pass
(:mod:`subspacelab.estimators._crate_forward`), which evaluates the same network without torch.
:func:`load_official_state_dict` reads the authors' checkpoints (their parameter names).
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels import soft_threshold

__all__ = [
    "CRATE",
    "CRATEDecoderLayer",
    "CRATELayer",
    "ISTA",
    "Lion",
    "MSSA",
    "PatchEmbedding",
    "from_official_state_dict",
    "load_official_state_dict",
    "to_official_state_dict",
]

MODES = ("code", "paper")


def _check_mode(mode):
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


class PatchEmbedding(nn.Module):
    """Unit (patch or token) embedding: ``LN(unit_dim) -> Linear -> LN(dim)`` in code mode
    (the input LayerNorm only when ``input_norm``), a plain Linear in paper mode.

    Examples
    --------
    >>> import torch
    >>> from subspacelab.nn.crate import PatchEmbedding
    >>> PatchEmbedding(unit_dim=16, dim=8)(torch.randn(3, 4, 16)).shape
    torch.Size([3, 4, 8])
    """

    def __init__(self, unit_dim, dim, *, mode="code", input_norm=True):
        super().__init__()
        _check_mode(mode)
        self.input_norm = nn.LayerNorm(unit_dim) if mode == "code" and input_norm else None
        self.proj = nn.Linear(unit_dim, dim)
        self.output_norm = nn.LayerNorm(dim) if mode == "code" else None

    def forward(self, x):
        if self.input_norm is not None:
            x = self.input_norm(x)
        x = self.proj(x)
        if self.output_norm is not None:
            x = self.output_norm(x)
        return x


class MSSA(nn.Module):
    r"""Multi-head subspace self-attention (returns the attention output, not the residual mix).

    Code mode: ``to_out(concat_k softmax(W_k W_k^T / sqrt(p)) W_k)`` with ``W = qkv(x)``.
    Paper mode: :math:`\beta \sum_k A_k (Z U_k) U_k^\top` with :math:`A_k = \mathrm{softmax}(G_k)`
    (or :math:`G_k` itself for ``attention="linear"``), :math:`G_k = (ZU_k)(ZU_k)^\top` and
    :math:`\beta = p/(N\varepsilon^2)` from the number ``N`` of tokens of the input.

    Examples
    --------
    >>> import torch
    >>> from subspacelab.nn.crate import MSSA
    >>> attn = MSSA(dim=8, heads=2, dim_head=4)
    >>> attn(torch.randn(3, 5, 8)).shape
    torch.Size([3, 5, 8])
    """

    def __init__(self, dim, heads, dim_head, *, mode="code", eps_sq=0.01, attention="softmax"):
        super().__init__()
        _check_mode(mode)
        if attention not in ("softmax", "linear"):
            raise ValueError(f"attention must be 'softmax' or 'linear', got {attention!r}")
        if mode == "code" and attention != "softmax":
            raise ValueError("attention='linear' exists in paper mode only")
        self.mode, self.heads, self.dim_head = mode, heads, dim_head
        self.eps_sq, self.attention = eps_sq, attention
        inner = heads * dim_head
        if mode == "code":
            self.qkv = nn.Linear(dim, inner, bias=False)
            self.to_out = nn.Linear(inner, dim) if not (heads == 1 and dim_head == dim) else None
        else:
            self.bases = nn.Parameter(torch.empty(heads, dim, dim_head))

    def project(self, x):
        """Per-head projections ``(n, K, N, p)``."""
        if self.mode == "code":
            n, N, _ = x.shape
            return self.qkv(x).reshape(n, N, self.heads, self.dim_head).permute(0, 2, 1, 3)
        return x.unsqueeze(1) @ self.bases

    def attend(self, w):
        """Attention matrices ``(n, K, N, N)`` from projections ``w``."""
        gram = w @ w.transpose(-1, -2)
        if self.mode == "code":
            return torch.softmax(gram * self.dim_head**-0.5, dim=-1)
        return gram if self.attention == "linear" else torch.softmax(gram, dim=-1)

    def forward(self, x):
        w = self.project(x)
        out = self.attend(w) @ w
        if self.mode == "code":
            n, K, N, p = out.shape
            out = out.permute(0, 2, 1, 3).reshape(n, N, K * p)
            return out if self.to_out is None else self.to_out(out)
        beta = self.dim_head / (x.shape[-2] * self.eps_sq)
        return beta * (out @ self.bases.transpose(-1, -2)).sum(dim=1)


class ISTA(nn.Module):
    r"""One proximal-gradient step on the non-negative lasso
    :math:`\min_{Z'\ge 0} \lambda\lVert Z'\rVert_1 + \tfrac12\lVert Z - Z' D^\top\rVert^2`
    started at :math:`Z' = Z` (row form of :math:`\min \lambda\|z'\|_1 + \frac12\|z - Dz'\|^2`):

    .. math:: \mathrm{ISTA}(Z) = S^+_{\eta\lambda}\bigl(Z + \eta (Z D - Z D^\top D)\bigr),

    with :math:`S^+_t(x) = \max(x - t, 0)` (:func:`subspacelab.kernels.soft_threshold`).
    ``weight`` is :math:`D` (Kaiming-uniform initialised, bound :math:`\sqrt{6/d}`, as the
    authors' code).

    Examples
    --------
    >>> import torch
    >>> from subspacelab.nn.crate import ISTA
    >>> out = ISTA(dim=8)(torch.randn(3, 5, 8))
    >>> out.shape, bool((out >= 0).all())  # non-negative lasso step
    (torch.Size([3, 5, 8]), True)
    """

    def __init__(self, dim, *, step=0.1, lam=0.1):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim, dim))
        nn.init.kaiming_uniform_(self.weight)
        self.step, self.lam = step, lam

    def forward(self, x):
        D = self.weight
        u = x + self.step * (x @ D - (x @ D.T) @ D)
        return soft_threshold(u, self.step * self.lam, nonnegative=True, backend="generic")


class CRATELayer(nn.Module):
    """One encoder layer: compression (MSSA step) then sparsification (ISTA step).

    Examples
    --------
    >>> import torch
    >>> from subspacelab.nn.crate import CRATELayer
    >>> layer = CRATELayer(dim=8, heads=2, dim_head=4)
    >>> layer(torch.randn(3, 5, 8)).shape
    torch.Size([3, 5, 8])
    """

    def __init__(self, dim, heads, dim_head, *, mode="code", ista_step=0.1, ista_lambda=0.1, eps_sq=0.01,
                 compression_step=None, attention="softmax"):
        super().__init__()
        _check_mode(mode)
        self.mode, self.compression_step = mode, compression_step
        self.norm1 = nn.LayerNorm(dim) if mode == "code" else None
        self.mssa = MSSA(dim, heads, dim_head, mode=mode, eps_sq=eps_sq, attention=attention)
        self.norm2 = nn.LayerNorm(dim) if mode == "code" else None
        self.ista = ISTA(dim, step=ista_step, lam=ista_lambda)
        if mode == "paper" and compression_step is None:
            raise ValueError("paper mode needs compression_step (kappa)")

    def compress(self, x):
        r"""The compression half-step :math:`Z^{\ell+1/2}`."""
        if self.mode == "code":
            return x + self.mssa(self.norm1(x))
        kb = self.compression_step * self.mssa.dim_head / (x.shape[-2] * self.mssa.eps_sq)
        return (1 - kb) * x + kb * self.mssa(x)

    def forward(self, x):
        half = self.compress(x)
        return self.ista(self.norm2(half) if self.norm2 is not None else half)


class CRATEDecoderLayer(nn.Module):
    r"""One decoder layer, the inverse of an encoder layer in reverse order (authors' ``crate_ae``):
    apply the dictionary (:math:`Z D^\top`), then undo a compression step
    (code: ``h - MSSA(LN(h))``; paper: :math:`(1+\kappa\beta) H - \kappa\beta\,\mathrm{MSSA}(H)`).

    Examples
    --------
    >>> import torch
    >>> from subspacelab.nn.crate import CRATEDecoderLayer
    >>> layer = CRATEDecoderLayer(dim=8, heads=2, dim_head=4)
    >>> layer(torch.randn(3, 5, 8)).shape
    torch.Size([3, 5, 8])
    """

    def __init__(self, dim, heads, dim_head, *, mode="code", eps_sq=0.01, compression_step=None):
        super().__init__()
        _check_mode(mode)
        self.mode, self.compression_step = mode, compression_step
        self.norm1 = nn.LayerNorm(dim) if mode == "code" else None
        self.dictionary = nn.Parameter(torch.empty(dim, dim))
        nn.init.kaiming_uniform_(self.dictionary)
        self.norm2 = nn.LayerNorm(dim) if mode == "code" else None
        self.mssa = MSSA(dim, heads, dim_head, mode=mode, eps_sq=eps_sq)

    def forward(self, x):
        u = self.norm1(x) if self.norm1 is not None else x
        h = u @ self.dictionary.T
        if self.mode == "code":
            return h - self.mssa(self.norm2(h))
        kb = self.compression_step * self.mssa.dim_head / (h.shape[-2] * self.mssa.eps_sq)
        return (1 + kb) * h - kb * self.mssa(h)


class _Head(nn.Module):
    def __init__(self, dim, out, *, mode):
        super().__init__()
        self.norm = nn.LayerNorm(dim) if mode == "code" else None
        self.linear = nn.Linear(dim, out)

    def forward(self, x):
        return self.linear(self.norm(x) if self.norm is not None else x)


class CRATE(nn.Module):
    """CRATE network on ``n_units`` units (image patches or tokens) of width ``unit_dim``.

    Parameters
    ----------
    unit_dim, n_units : int
        Width and number of the input units (``patch_h * patch_w * channels`` and the number of
        patches for images).
    dim, depth, heads, dim_head : int
        Token width d, number of layers L, heads K and head dimension p.
    mode : {"code", "paper"}
    ista_step, ista_lambda : float
        ISTA step size :math:`\\eta` and threshold weight :math:`\\lambda`.
    eps_sq : float
        :math:`\\varepsilon^2` of :math:`\\beta = p/(N\\varepsilon^2)` (paper mode only).
    compression_step : float or None
        :math:`\\kappa` (paper mode); None gives :math:`\\kappa\\beta = 1/2`.
    attention : {"softmax", "linear"}
    n_classes : int or None
        Size of the classification head (none when None).
    decoder_depth : int
        Number of decoder layers (0: no decoder and no mask token).
    positional : bool
        Learned positional embedding (drop it for the permutation-equivariance invariant).
    input_norm : bool
        LayerNorm of the units before the embedding (code mode; the authors' image embedding).
    pool : {"cls", "mean"}

    Examples
    --------
    >>> import torch
    >>> from subspacelab.nn.crate import CRATE
    >>> net = CRATE(unit_dim=16, n_units=4, dim=8, depth=2, heads=2, n_classes=3)
    >>> net(torch.zeros(5, 4, 16)).shape  # logits of 5 samples of 4 units each
    torch.Size([5, 3])
    """

    def __init__(self, unit_dim, n_units, *, dim=64, depth=4, heads=4, dim_head=None, mode="code", ista_step=0.1,
                 ista_lambda=0.1, eps_sq=0.01, compression_step=None, attention="softmax", n_classes=None,
                 decoder_depth=0, positional=True, input_norm=True, pool="cls"):
        super().__init__()
        _check_mode(mode)
        dim_head = dim // heads if dim_head is None else dim_head
        n_tokens = n_units + 1
        if mode == "paper" and compression_step is None:
            compression_step = 0.5 * n_tokens * eps_sq / dim_head
        self.mode, self.pool, self.depth, self.decoder_depth = mode, pool, depth, decoder_depth
        self.heads, self.dim_head, self.dim = heads, dim_head, dim
        self.ista_step, self.ista_lambda, self.eps_sq = ista_step, ista_lambda, eps_sq
        self.compression_step, self.attention = compression_step, attention
        self.embed = PatchEmbedding(unit_dim, dim, mode=mode, input_norm=input_norm)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, n_tokens, dim)) if positional else None
        kw = dict(mode=mode, eps_sq=eps_sq, compression_step=compression_step)
        self.layers = nn.ModuleList(
            CRATELayer(dim, heads, dim_head, ista_step=ista_step, ista_lambda=ista_lambda, attention=attention, **kw)
            for _ in range(depth)
        )
        self.head = _Head(dim, n_classes, mode=mode) if n_classes is not None else None
        if decoder_depth:
            self.mask_token = nn.Parameter(0.02 * torch.randn(1, 1, dim))
            self.decoder = nn.ModuleList(CRATEDecoderLayer(dim, heads, dim_head, **kw) for _ in range(decoder_depth))
            self.decoder_head = _Head(dim, unit_dim, mode=mode)
        else:
            self.mask_token = None
        if mode == "paper":
            self._init_paper_bases(n_tokens)

    @torch.no_grad()
    def _init_paper_bases(self, n_tokens):
        """Orthonormal bases scaled by :math:`\\beta^{-1/2}`, so that :math:`\\beta U_k U_k^\\top`
        is an orthogonal projection at initialisation."""
        mssas = [m for m in self.modules() if isinstance(m, MSSA)]
        for m in mssas:
            K, d, p = m.bases.shape
            scale = (p / (n_tokens * m.eps_sq)) ** -0.5
            if K * p <= d:
                q, _ = torch.linalg.qr(torch.randn(d, K * p))
                m.bases.copy_(scale * q.reshape(d, K, p).permute(1, 0, 2))
            elif p <= d:
                for k in range(K):
                    q, _ = torch.linalg.qr(torch.randn(d, p))
                    m.bases[k].copy_(scale * q)
            else:
                m.bases.copy_(scale * torch.randn(K, d, p) / math.sqrt(d))

    def embed_units(self, units, mask=None):
        """Tokens :math:`Z^0` ``(n, N+1, d)``; units where ``mask`` is True become the mask token."""
        x = self.embed(units)
        if mask is not None:
            m = mask.unsqueeze(-1).to(x.dtype)
            x = (1 - m) * x + m * self.mask_token
        x = torch.cat([self.cls_token.expand(x.shape[0], 1, x.shape[-1]), x], dim=1)
        if self.pos_embedding is not None:
            x = x + self.pos_embedding
        return x

    def encode(self, units, mask=None):
        """List ``[Z^0, ..., Z^L]`` of the token arrays."""
        z = self.embed_units(units, mask)
        out = [z]
        for layer in self.layers:
            z = layer(z)
            out.append(z)
        return out

    def pooled(self, z):
        return z[:, 0] if self.pool == "cls" else z.mean(dim=1)

    def decode(self, z):
        """Predicted units ``(n, N, unit_dim)`` from tokens ``(n, N+1, d)``."""
        for layer in self.decoder:
            z = layer(z)
        return self.decoder_head(z)[:, 1:]

    def forward(self, units):
        """Class logits (when there is a head), else the last tokens."""
        z = self.encode(units)[-1]
        return self.head(self.pooled(z)) if self.head is not None else z


class Lion(torch.optim.Optimizer):
    r"""The Lion optimiser (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms"),
    used by the CRATE paper: :math:`\theta \leftarrow \theta - \mathrm{lr}\,(\mathrm{sign}(\beta_1
    m + (1-\beta_1) g) + \mathrm{wd}\,\theta)`, then :math:`m \leftarrow \beta_2 m + (1-\beta_2) g`.

    Examples
    --------
    >>> import torch
    >>> from subspacelab.nn.crate import Lion
    >>> w = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    >>> opt = Lion([w], lr=0.1)
    >>> (w ** 2).sum().backward()
    >>> opt.step()
    >>> w.detach()  # each coordinate moves by lr against the sign of its gradient
    tensor([ 0.9000, -0.9000])
    """

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(torch.sign(m * b1 + p.grad * (1 - b1)), alpha=-group["lr"])
                m.mul_(b2).add_(p.grad, alpha=1 - b2)
        return loss


# ---------------------------------------------------------------------------------------------
# the authors' checkpoints (model/crate.py parameter names)

_OFFICIAL_FIXED = {
    "to_patch_embedding.1.weight": "embed.input_norm.weight",
    "to_patch_embedding.1.bias": "embed.input_norm.bias",
    "to_patch_embedding.2.weight": "embed.proj.weight",
    "to_patch_embedding.2.bias": "embed.proj.bias",
    "to_patch_embedding.3.weight": "embed.output_norm.weight",
    "to_patch_embedding.3.bias": "embed.output_norm.bias",
    "cls_token": "cls_token",
    "pos_embedding": "pos_embedding",
    "mlp_head.0.weight": "head.norm.weight",
    "mlp_head.0.bias": "head.norm.bias",
    "mlp_head.1.weight": "head.linear.weight",
    "mlp_head.1.bias": "head.linear.bias",
}
_OFFICIAL_LAYER = {
    "0.norm.weight": "norm1.weight",
    "0.norm.bias": "norm1.bias",
    "0.fn.qkv.weight": "mssa.qkv.weight",
    "0.fn.to_out.0.weight": "mssa.to_out.weight",
    "0.fn.to_out.0.bias": "mssa.to_out.bias",
    "1.norm.weight": "norm2.weight",
    "1.norm.bias": "norm2.bias",
    "1.fn.weight": "ista.weight",
}
_LAYER_RE = re.compile(r"^transformer\.layers\.(\d+)\.(.+)$")


def _unwrap(state_dict):
    """Accept a bare state dict, ``{"model": ...}``/``{"state_dict": ...}`` wrappers and the
    ``module.`` prefix of DataParallel checkpoints."""
    for key in ("model", "state_dict"):
        if key in state_dict and isinstance(state_dict[key], dict):
            state_dict = state_dict[key]
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}


def _official_to_ours(state_dict):
    out = {}
    for key, value in _unwrap(state_dict).items():
        if key in _OFFICIAL_FIXED:
            out[_OFFICIAL_FIXED[key]] = value
            continue
        m = _LAYER_RE.match(key)
        if m and m.group(2) in _OFFICIAL_LAYER:
            out[f"layers.{m.group(1)}.{_OFFICIAL_LAYER[m.group(2)]}"] = value
            continue
        raise KeyError(f"unexpected parameter {key!r} in the CRATE checkpoint (not in model/crate.py's layout)")
    return out


def to_official_state_dict(module):
    """The state dict of a code-mode :class:`CRATE` under the authors' parameter names.

    Examples
    --------
    >>> import torch
    >>> from subspacelab.nn.crate import CRATE, load_official_state_dict, to_official_state_dict
    >>> net = CRATE(unit_dim=16, n_units=4, dim=8, depth=1, heads=2, n_classes=3)
    >>> sd = to_official_state_dict(net)
    >>> copy = CRATE(unit_dim=16, n_units=4, dim=8, depth=1, heads=2, n_classes=3)
    >>> copy = load_official_state_dict(copy, sd)
    >>> bool(torch.equal(copy(torch.ones(1, 4, 16)), net(torch.ones(1, 4, 16))))
    True
    """
    if module.mode != "code" or module.decoder_depth:
        raise ValueError("only a code-mode CRATE classifier without decoder has the official layout")
    inverse = {v: k for k, v in _OFFICIAL_FIXED.items()}
    layer_inverse = {v: k for k, v in _OFFICIAL_LAYER.items()}
    out = {}
    for key, value in module.state_dict().items():
        if key in inverse:
            out[inverse[key]] = value
        else:
            i, rest = re.match(r"^layers\.(\d+)\.(.+)$", key).groups()
            out[f"transformer.layers.{i}.{layer_inverse[rest]}"] = value
    return out


def load_official_state_dict(module, state_dict):
    """Load an authors' CRATE checkpoint (``model/crate.py`` names) into a code-mode :class:`CRATE`.

    Every parameter must be present with the right shape (strict loading); wrappers
    ``{"model": ...}``, ``{"state_dict": ...}`` and a ``module.`` prefix are accepted.

    Examples
    --------
    >>> import torch
    >>> from subspacelab.nn.crate import CRATE, load_official_state_dict, to_official_state_dict
    >>> src = CRATE(unit_dim=16, n_units=4, dim=8, depth=1, heads=2, n_classes=3)
    >>> dst = CRATE(unit_dim=16, n_units=4, dim=8, depth=1, heads=2, n_classes=3)
    >>> dst = load_official_state_dict(dst, {"model": to_official_state_dict(src)})  # wrappers accepted
    >>> bool(torch.equal(dst(torch.ones(1, 4, 16)), src(torch.ones(1, 4, 16))))
    True
    """
    if module.mode != "code":
        raise ValueError("the authors' checkpoints are in the code-mode layout: build CRATE(mode='code')")
    ours = _official_to_ours(state_dict)
    own = module.state_dict()
    for key, value in ours.items():
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            raise ValueError(f"{key}: checkpoint shape {tuple(value.shape)} does not match the module's {tuple(own[key].shape)}")
    module.load_state_dict(ours, strict=True)
    return module


def from_official_state_dict(state_dict, *, heads, pool="cls", ista_step=0.1, ista_lambda=0.1):
    """Build a code-mode :class:`CRATE` from an authors' checkpoint, reading the sizes off the
    parameter shapes (``heads`` cannot be read off: ``qkv`` stacks heads x dim_head rows; the
    released models use ``dim_head = dim / heads``).

    Examples
    --------
    >>> import torch
    >>> from subspacelab.nn.crate import CRATE, from_official_state_dict, to_official_state_dict
    >>> src = CRATE(unit_dim=16, n_units=4, dim=8, depth=2, heads=2, n_classes=3)
    >>> net = from_official_state_dict(to_official_state_dict(src), heads=2)
    >>> bool(torch.equal(net(torch.ones(1, 4, 16)), src(torch.ones(1, 4, 16))))
    True
    """
    ours = _official_to_ours(state_dict)
    unit_dim = ours["embed.proj.weight"].shape[1]
    dim = ours["embed.proj.weight"].shape[0]
    n_units = ours["pos_embedding"].shape[1] - 1
    depth = 1 + max(int(k.split(".")[1]) for k in ours if k.startswith("layers."))
    inner = ours["layers.0.mssa.qkv.weight"].shape[0]
    if inner % heads:
        raise ValueError(f"the qkv projection has {inner} rows, not a multiple of heads={heads}")
    n_classes = ours["head.linear.weight"].shape[0] if "head.linear.weight" in ours else None
    module = CRATE(unit_dim, n_units, dim=dim, depth=depth, heads=heads, dim_head=inner // heads, mode="code",
                   ista_step=ista_step, ista_lambda=ista_lambda, n_classes=n_classes, pool=pool,
                   input_norm="embed.input_norm.weight" in ours)
    return load_official_state_dict(module, state_dict)

