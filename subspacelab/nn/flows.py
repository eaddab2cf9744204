r"""Multi-scale normalizing flows (Glow / RealNVP layout) with exact log-determinants.

Kingma & Dhariwal, "Glow", NeurIPS 2018; Dinh, Sohl-Dickstein & Bengio, "RealNVP", ICLR 2017;
Durkan et al., "Neural Spline Flows", NeurIPS 2019. Layout of BlindHarmony's flow (spec
diffusion_flow.md §4.1): per level a squeeze (space-to-depth x2), ``steps_per_level`` x
[ActNorm -> LU-parameterised invertible 1x1 convolution -> coupling], then a factor-out of half
the channels (the factored half goes straight to the latent).

Every module maps ``x -> (y, logdet)`` with ``forward`` and ``y -> (x, logdet_inverse)`` with
``inverse``; log-determinants are per sample and exact:

* squeeze: 0;
* ActNorm :math:`y = (x + b)\,e^{s}`: :math:`HW\sum_c s_c`;
* 1x1 convolution :math:`W = P L (U + \mathrm{diag}(\sigma e^{u}))`: :math:`HW\sum_c u_c`;
* affine coupling :math:`y_b = x_b\,\mathrm{sig}(r + 2) + t` (Glow's scale): :math:`\sum\log\mathrm{sig}(r+2)`;
* rational-quadratic spline coupling: :math:`\sum\log g'(x_b)`.

The conditioners are small residual CNNs (3x3 convolutions, ReLU, no batch normalisation, so
that a trained flow is a fixed function of its input; the reference uses batch norm). Their
last convolution starts at zero.
"""

from __future__ import annotations

import math

import array_api_compat.torch as xt
import numpy as np
import torch
from torch import nn

from ._flow_xp import rational_quadratic_spline

__all__ = ["ActNorm", "AffineCoupling", "Glow", "InvertibleConv1x1", "SplineCoupling", "Squeeze"]


class Squeeze(nn.Module):
    """Space-to-depth: (B, C, H, W) -> (B, 4C, H/2, W/2); log-det 0.

    Examples
    --------
    >>> import torch
    >>> from subspacelab.nn.flows import Squeeze
    >>> y, logdet = Squeeze()(torch.zeros(2, 1, 4, 4))
    >>> tuple(y.shape), logdet.tolist()
    ((2, 4, 2, 2), [0.0, 0.0])
    """

    def forward(self, x):
        B, C, H, W = x.shape
        x = x.reshape(B, C, H // 2, 2, W // 2, 2).permute(0, 1, 3, 5, 2, 4)
        return x.reshape(B, 4 * C, H // 2, W // 2), x.new_zeros(B)

    def inverse(self, y):
        B, C, H, W = y.shape
        y = y.reshape(B, C // 4, 2, 2, H, W).permute(0, 1, 4, 2, 5, 3)
        return y.reshape(B, C // 4, 2 * H, 2 * W), y.new_zeros(B)


class ActNorm(nn.Module):
    """Per-channel affine map ``y = (x + bias) * exp(log_scale)``, data-dependent initialisation.

    The first forward pass in training mode sets ``bias = -mean`` and ``log_scale = -log std``
    of the batch per channel, so the output starts standardised (Glow).

    Examples
    --------
    >>> import torch
    >>> from subspacelab.nn.flows import ActNorm
    >>> x = 3.0 * torch.randn(64, 2, 4, 4, generator=torch.Generator().manual_seed(0)) + 1.0
    >>> y, logdet = ActNorm(2)(x)  # training mode: the first batch initialises it
    >>> bool(y.mean().abs() < 1e-5), logdet.shape
    (True, torch.Size([64]))
    """

    def __init__(self, channels):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.register_buffer("initialized", torch.tensor(False))

    def _init(self, x):
        with torch.no_grad():
            mean = x.mean(dim=(0, 2, 3))
            std = x.std(dim=(0, 2, 3), unbiased=False) if x.numel() > x.shape[1] else torch.ones_like(mean)
            self.bias.copy_(-mean)
            self.log_scale.copy_(-torch.log(std.clamp_min(1e-6)))
            self.initialized.fill_(True)

    def forward(self, x):
        if self.training and not bool(self.initialized):
            self._init(x)
        H, W = x.shape[-2:]
        y = (x + self.bias.view(1, -1, 1, 1)) * torch.exp(self.log_scale).view(1, -1, 1, 1)
        return y, (H * W * self.log_scale.sum()).expand(x.shape[0])

    def inverse(self, y):
        H, W = y.shape[-2:]
        x = y * torch.exp(-self.log_scale).view(1, -1, 1, 1) - self.bias.view(1, -1, 1, 1)
        return x, (-H * W * self.log_scale.sum()).expand(y.shape[0])


class InvertibleConv1x1(nn.Module):
    r"""Invertible 1x1 convolution with :math:`W = P L (U + \mathrm{diag}(\sigma e^{u}))`.

    Initialised from a random rotation (QR of a Gaussian drawn from torch's global generator).

    Examples
    --------
    >>> import torch
    >>> from subspacelab.nn.flows import InvertibleConv1x1
    >>> conv = InvertibleConv1x1(3)
    >>> x = torch.randn(2, 3, 4, 4)
    >>> y, logdet = conv(x)
    >>> bool(torch.allclose(conv.inverse(y)[0], x, atol=1e-5))
    True
    """

    def __init__(self, channels):
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(channels, channels, dtype=torch.float64))
        P, L, U = torch.linalg.lu(q)
        diag = torch.diagonal(U)
        self.register_buffer("perm", P.float())
        self.register_buffer("sign", torch.sign(diag).float())
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.lower = nn.Parameter((L * self.lower_mask.double()).float())
        self.upper = nn.Parameter(torch.triu(U, 1).float())
        self.log_diag = nn.Parameter(torch.log(torch.abs(diag)).float())

    def weight(self):
        C = self.log_diag.shape[0]
        eye = torch.eye(C, dtype=self.lower.dtype, device=self.lower.device)
        L = self.lower * self.lower_mask + eye
        U = self.upper * self.lower_mask.T + torch.diag(self.sign * torch.exp(self.log_diag))
        return self.perm @ L @ U

    def forward(self, x):
        H, W = x.shape[-2:]
        y = torch.einsum("oc,bchw->bohw", self.weight(), x)
        return y, (H * W * self.log_diag.sum()).expand(x.shape[0])

    def inverse(self, y):
        H, W = y.shape[-2:]
        w_inv = torch.linalg.inv(self.weight().double()).to(y.dtype)
        x = torch.einsum("oc,bchw->bohw", w_inv, y)
        return x, (-H * W * self.log_diag.sum()).expand(y.shape[0])


class _Conditioner(nn.Module):
    """3x3 conv -> n_blocks residual blocks (ReLU, conv, ReLU, conv) -> ReLU -> 3x3 conv (zero init)."""

    def __init__(self, c_in, c_out, hidden, n_blocks):
        super().__init__()
        self.n_blocks = n_blocks
        self.inp = nn.Conv2d(c_in, hidden, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.ModuleList([nn.Conv2d(hidden, hidden, 3, padding=1), nn.Conv2d(hidden, hidden, 3, padding=1)])
            for _ in range(n_blocks))
        self.out = nn.Conv2d(hidden, c_out, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x):
        h = self.inp(x)
        for c1, c2 in self.blocks:
            h = h + c2(torch.relu(c1(torch.relu(h))))
        return self.out(torch.relu(h))

    def export(self):
        out = {"n_blocks": self.n_blocks, "in.weight": self.inp.weight, "in.bias": self.inp.bias,
               "out.weight": self.out.weight, "out.bias": self.out.bias}
        for b, (c1, c2) in enumerate(self.blocks):
            out.update({f"blocks.{b}.0.weight": c1.weight, f"blocks.{b}.0.bias": c1.bias,
                        f"blocks.{b}.1.weight": c2.weight, f"blocks.{b}.1.bias": c2.bias})
        return {k: (_np(v) if torch.is_tensor(v) else v) for k, v in out.items()}


def _np(t):
    return t.detach().cpu().to(torch.float64).numpy()


class AffineCoupling(nn.Module):
    r"""Affine coupling on a channel split at the mid-point:
    :math:`y_a = x_a,\ y_b = x_b\,\mathrm{sig}(r(x_a) + 2) + t(x_a)` (Glow's bounded scale;
    a floor of 1e-3 keeps it invertible).

    Examples
    --------
    >>> import torch
    >>> from subspacelab.nn.flows import AffineCoupling
    >>> layer = AffineCoupling(4, hidden=8, n_blocks=1)
    >>> x = torch.randn(2, 4, 4, 4)
    >>> y, logdet = layer(x)
    >>> bool(torch.allclose(layer.inverse(y)[0], x, atol=1e-5)), bool(torch.equal(y[:, :2], x[:, :2]))
    (True, True)
    """

    def __init__(self, channels, hidden, n_blocks):
        super().__init__()
        if channels < 2:
            raise ValueError(f"a coupling layer needs at least 2 channels to split, got {channels}")
        self.c1 = channels // 2
        self.net = _Conditioner(self.c1, 2 * (channels - self.c1), hidden, n_blocks)

    def _params(self, xa):
        h = self.net(xa)
        c2 = h.shape[1] // 2
        return h[:, :c2], torch.sigmoid(h[:, c2:] + 2.0) + 1e-3

    def forward(self, x):
        xa, xb = x[:, :self.c1], x[:, self.c1:]
        shift, scale = self._params(xa)
        return torch.cat((xa, xb * scale + shift), 1), torch.log(scale).sum(dim=(1, 2, 3))

    def inverse(self, y):
        ya, yb = y[:, :self.c1], y[:, self.c1:]
        shift, scale = self._params(ya)
        return torch.cat((ya, (yb - shift) / scale), 1), -torch.log(scale).sum(dim=(1, 2, 3))

    def export(self):
        return {"kind": "affine", **self.net.export()}


class SplineCoupling(nn.Module):
    """Rational-quadratic spline coupling (``num_bins`` bins on ``[-tail_bound, tail_bound]``,
    identity tails, minimum bin width/height/derivative 1e-3; spec §4.1).

    Examples
    --------
    >>> import torch
    >>> from subspacelab.nn.flows import SplineCoupling
    >>> layer = SplineCoupling(4, hidden=8, n_blocks=1)
    >>> x = torch.randn(2, 4, 4, 4)
    >>> y, logdet = layer(x)
    >>> bool(torch.allclose(layer.inverse(y)[0], x, atol=1e-5))
    True
    """

    def __init__(self, channels, hidden, n_blocks, num_bins=8, tail_bound=3.0):
        super().__init__()
        if channels < 2:
            raise ValueError(f"a coupling layer needs at least 2 channels to split, got {channels}")
        self.c1 = channels // 2
        self.num_bins = int(num_bins)
        self.tail_bound = float(tail_bound)
        self.net = _Conditioner(self.c1, (channels - self.c1) * (3 * num_bins - 1), hidden, n_blocks)

    def _spline(self, xa, xb, inverse):
        h = self.net(xa)
        B, _, H, W = h.shape
        c2, K = xb.shape[1], self.num_bins
        h = h.reshape(B, c2, 3 * K - 1, H, W).permute(0, 1, 3, 4, 2)
        out, ld = rational_quadratic_spline(xb, h[..., :K], h[..., K:2 * K], h[..., 2 * K:], inverse=inverse,
                                            tail_bound=self.tail_bound, xp=xt)
        return out, ld.sum(dim=(1, 2, 3))

    def forward(self, x):
        xa, xb = x[:, :self.c1], x[:, self.c1:]
        yb, ld = self._spline(xa, xb, False)
        return torch.cat((xa, yb), 1), ld

    def inverse(self, y):
        ya, yb = y[:, :self.c1], y[:, self.c1:]
        xb, ld = self._spline(ya, yb, True)
        return torch.cat((ya, xb), 1), ld

    def export(self):
        return {"kind": "spline", "num_bins": self.num_bins, "tail_bound": self.tail_bound, **self.net.export()}


class _Step(nn.Module):
    def __init__(self, channels, coupling, hidden, n_blocks, num_bins, tail_bound):
        super().__init__()
        self.actnorm = ActNorm(channels)
        self.invconv = InvertibleConv1x1(channels)
        if coupling == "affine":
            self.coupling = AffineCoupling(channels, hidden, n_blocks)
        else:
            self.coupling = SplineCoupling(channels, hidden, n_blocks, num_bins, tail_bound)

    def forward(self, x):
        x, a = self.actnorm(x)
        x, b = self.invconv(x)
        x, c = self.coupling(x)
        return x, a + b + c

    def inverse(self, y):
        y, c = self.coupling.inverse(y)
        y, b = self.invconv.inverse(y)
        y, a = self.actnorm.inverse(y)
        return y, a + b + c


class Glow(nn.Module):
    r"""Multi-scale flow :math:`z = f(x)` on images of shape ``(C, H, W)`` with a standard
    normal base: :math:`\log p(x) = \log N(f(x); 0, I) + \log|\det \partial f/\partial x|`.

    Parameters
    ----------
    image_shape : (C, H, W)
    levels : int
        Number of squeezes; H and W must be divisible by ``2**levels``. ``levels=0`` gives one
        level without squeeze (a per-pixel flow over channels, used for tabular data). The
        latent of level ``i < max(levels, 1) - 1`` takes half of its channels (factor-out).
    steps_per_level : int
        Flow steps per level (the paper/code: 4 levels x 7 steps at 144 x 176).
    hidden_channels, n_blocks : int
        Conditioner width and residual blocks (the code: 96 and 3, with batch norm).
    coupling : {"affine", "rational_quadratic_spline"}
    num_bins, tail_bound : int, float
        Spline bins and bound (the code: 8 and 3).

    Examples
    --------
    >>> import torch
    >>> from subspacelab.nn.flows import Glow
    >>> flow = Glow((1, 8, 8), levels=2, steps_per_level=1, hidden_channels=8)
    >>> x = torch.rand(3, 1, 8, 8) - 0.5
    >>> z, logdet = flow(x)
    >>> tuple(z.shape), bool(torch.allclose(flow.inverse(z)[0], x, atol=1e-5))
    ((3, 64), True)
    >>> flow.log_prob(x).shape
    torch.Size([3])
    """

    def __init__(self, image_shape, levels=3, steps_per_level=4, hidden_channels=32, n_blocks=1,
                 coupling="affine", num_bins=8, tail_bound=3.0):
        super().__init__()
        C, H, W = (int(s) for s in image_shape)
        if levels and (H % 2**levels or W % 2**levels):
            raise ValueError(f"levels={levels} needs H and W divisible by {2**levels}, got image shape {(H, W)}")
        if coupling not in ("affine", "rational_quadratic_spline"):
            raise ValueError(f"coupling must be 'affine' or 'rational_quadratic_spline', got {coupling!r}")
        self.image_shape = (C, H, W)
        self.coupling = coupling
        self.n_levels = max(levels, 1)
        self.squeezes = [i < levels for i in range(self.n_levels)]
        self.levels = nn.ModuleList()
        self.latent_shapes = []
        c, h, w = C, H, W
        for i in range(self.n_levels):
            if self.squeezes[i]:
                c, h, w = 4 * c, h // 2, w // 2
            self.levels.append(nn.ModuleList(_Step(c, coupling, hidden_channels, n_blocks, num_bins, tail_bound)
                                             for _ in range(steps_per_level)))
            if i < self.n_levels - 1:
                self.latent_shapes.append((c // 2, h, w))
                c = c - c // 2
        self.latent_shapes.append((c, h, w))
        self.n_dims = C * H * W
        self._squeeze = Squeeze()

    def forward(self, x):
        """``(z (B, D), logdet (B,))``."""
        B = x.shape[0]
        logdet = x.new_zeros(B)
        parts = []
        for i, steps in enumerate(self.levels):
            if self.squeezes[i]:
                x, _ = self._squeeze(x)
            for step in steps:
                x, ld = step(x)
                logdet = logdet + ld
            if i < self.n_levels - 1:
                half = x.shape[1] // 2
                parts.append(x[:, :half].reshape(B, -1))
                x = x[:, half:]
        parts.append(x.reshape(B, -1))
        return torch.cat(parts, 1), logdet

    def inverse(self, z):
        """``(x (B, C, H, W), logdet of the inverse (B,))``."""
        B = z.shape[0]
        sizes = [math.prod(s) for s in self.latent_shapes]
        chunks = torch.split(z, sizes, dim=1)
        x = chunks[-1].reshape(B, *self.latent_shapes[-1])
        logdet = z.new_zeros(B)
        for i in range(self.n_levels - 1, -1, -1):
            if i < self.n_levels - 1:
                x = torch.cat((chunks[i].reshape(B, *self.latent_shapes[i]), x), 1)
            for step in reversed(self.levels[i]):
                x, ld = step.inverse(x)
                logdet = logdet + ld
            if self.squeezes[i]:
                x, _ = self._squeeze.inverse(x)
        return x, logdet

    def log_prob(self, x):
        r""":math:`\log p(x)` in nats, per sample."""
        z, logdet = self(x)
        return -0.5 * (z**2).sum(1) - 0.5 * z.shape[1] * math.log(2 * math.pi) + logdet

    def export(self):
        """The flow as nested dicts of float64 NumPy arrays for :func:`subspacelab.nn._flow_xp.flow_forward`."""
        levels = []
        for i, steps in enumerate(self.levels):
            out = []
            for s in steps:
                w = s.invconv.weight().detach().double()
                out.append({
                    "actnorm.bias": _np(s.actnorm.bias), "actnorm.log_scale": _np(s.actnorm.log_scale),
                    "invconv.weight": _np(w), "invconv.inverse": _np(torch.linalg.inv(w)),
                    "invconv.logdet": np.asarray(float(s.invconv.log_diag.detach().double().sum())),
                    "coupling": s.coupling.export(),
                })
            levels.append({"squeeze": self.squeezes[i], "steps": out})
        return {"levels": levels, "latent_shapes": [tuple(s) for s in self.latent_shapes]}
