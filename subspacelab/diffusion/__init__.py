"""Diffusion schedules, sampling loops and denoisers with the interface D(z, sigma)."""
