r"""A small U-Net noise-conditioned denoiser with EDM preconditioning (Karras et al. 2022).

.. math::

    D_\theta(x, \sigma) = c_\text{skip}(\sigma)\,x + c_\text{out}(\sigma)\,
        F_\theta\big(c_\text{in}(\sigma)\,x,\ c_\text{noise}(\sigma)\big),

    c_\text{skip} = \frac{\sigma_d^2}{\sigma^2+\sigma_d^2},\quad
    c_\text{out} = \frac{\sigma\sigma_d}{\sqrt{\sigma^2+\sigma_d^2}},\quad
    c_\text{in} = \frac{1}{\sqrt{\sigma^2+\sigma_d^2}},\quad
    c_\text{noise} = \tfrac14\ln\sigma.

Any image size works (odd sizes, 1-pixel-high "images" of tabular data): pooling halves only
the axes longer than one pixel and the decoder resizes to the skip connection's shape.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EDMUNet"]


class _NoiseEmbedding(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.register_buffer("freqs", torch.exp(-math.log(1e4) * torch.arange(dim // 2) / max(dim // 2, 1)))
        self.mlp = nn.Sequential(nn.Linear(2 * (dim // 2), dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, c_noise):
        a = c_noise[:, None] * self.freqs[None, :] * 100.0
        return self.mlp(torch.cat((torch.sin(a), torch.cos(a)), dim=1))


def _groups(ch):
    for g in (8, 4, 2, 1):
        if ch % g == 0:
            return g
    return 1


class _ResBlock(nn.Module):
    def __init__(self, c_in, c_out, emb_dim):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


def _down(x):
    kh = 2 if x.shape[-2] > 1 else 1
    kw = 2 if x.shape[-1] > 1 else 1
    return F.avg_pool2d(x, (kh, kw), ceil_mode=True)


class EDMUNet(nn.Module):
    r"""U-Net :math:`F_\theta` wrapped in EDM preconditioning; ``forward(x, sigma)`` returns
    :math:`D_\theta(x, \sigma)`.

    Parameters
    ----------
    in_channels : int
    base_channels : int
        Channels of the first level.
    channel_mult : sequence of int
        Channel multiplier per level (one pooling between consecutive levels).
    sigma_data : float
        :math:`\sigma_d`, the standard deviation of the training data.

    Examples
    --------
    >>> import torch
    >>> from subspacelab.nn.unet import EDMUNet
    >>> net = EDMUNet(in_channels=1, base_channels=8)
    >>> x = torch.randn(2, 1, 8, 8)
    >>> net(x, torch.tensor([0.5, 1.0])).shape  # D(x, sigma), one sigma per image
    torch.Size([2, 1, 8, 8])
    """

    def __init__(self, in_channels=1, base_channels=32, channel_mult=(1, 2), sigma_data=0.5):
        super().__init__()
        self.sigma_data = float(sigma_data)
        emb_dim = 4 * base_channels
        self.embed = _NoiseEmbedding(emb_dim)
        chans = [base_channels * m for m in channel_mult]
        self.conv_in = nn.Conv2d(in_channels, chans[0], 3, padding=1)
        self.down = nn.ModuleList()
        c = chans[0]
        for ch in chans:
            self.down.append(_ResBlock(c, ch, emb_dim))
            c = ch
        self.mid = _ResBlock(c, c, emb_dim)
        self.up = nn.ModuleList()
        for ch in reversed(chans):
            self.up.append(_ResBlock(c + ch, ch, emb_dim))
            c = ch
        self.norm_out = nn.GroupNorm(_groups(c), c)
        self.conv_out = nn.Conv2d(c, in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def raw(self, x, c_noise):
        """The unconditioned network :math:`F_\\theta`."""
        emb = self.embed(c_noise)
        h = self.conv_in(x)
        skips = []
        for i, block in enumerate(self.down):
            h = block(h, emb)
            skips.append(h)
            if i < len(self.down) - 1:
                h = _down(h)
        h = self.mid(h, emb)
        for block in self.up:
            s = skips.pop()
            if h.shape[-2:] != s.shape[-2:]:
                h = F.interpolate(h, size=s.shape[-2:], mode="nearest")
            h = block(torch.cat((h, s), dim=1), emb)
        return self.conv_out(F.silu(self.norm_out(h)))

    def forward(self, x, sigma):
        sigma = sigma.reshape(-1, 1, 1, 1).to(x.dtype)
        sd = self.sigma_data
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / torch.sqrt(sigma**2 + sd**2)
        c_in = 1.0 / torch.sqrt(sigma**2 + sd**2)
        c_noise = torch.log(sigma.reshape(-1)) / 4.0
        return c_skip * x + c_out * self.raw(c_in * x, c_noise)
