"""Diffusion schedules, sampling loops and denoisers with the interface D(z, sigma).

Denoisers return :math:`E[x_0 \\mid z = x_0 + \\sigma n]` (the EDM convention of
specs/diffusion_flow.md section 1.2); :func:`tweedie` converts VP/VE/EDM parameterisations.
"""

from .denoisers import DenoiserMixin, GaussianDenoiser, check_sigma, sigma_to_alpha_bar, tweedie, vp_sigma
from .samplers import (
    channels_to_complex,
    complex_to_channels,
    dds_data_consistency,
    dds_renoise,
    dds_sample,
    ddim_step,
    diff_z,
    diff_z_adjoint,
    sampling_scales,
    vp_alpha_bar,
)
from .torch_denoiser import TorchDenoiser

__all__ = [
    "DenoiserMixin",
    "GaussianDenoiser",
    "TorchDenoiser",
    "channels_to_complex",
    "check_sigma",
    "complex_to_channels",
    "dds_data_consistency",
    "dds_renoise",
    "dds_sample",
    "ddim_step",
    "diff_z",
    "diff_z_adjoint",
    "sampling_scales",
    "sigma_to_alpha_bar",
    "tweedie",
    "vp_alpha_bar",
    "vp_sigma",
]
