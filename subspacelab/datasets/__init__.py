"""Loaders for packaged real data and generators of synthetic data."""
