"""Loaders for packaged real data and generators of synthetic data."""

from .fabry_perot import (
    IMSPOC_PROTOTYPES,
    load_earthlib_spectra,
    load_imspoc,
    make_fabry_perot_acquisition,
    simulate_interferograms,
)

__all__ = [
    "IMSPOC_PROTOTYPES",
    "load_earthlib_spectra",
    "load_imspoc",
    "make_fabry_perot_acquisition",
    "simulate_interferograms",
]
