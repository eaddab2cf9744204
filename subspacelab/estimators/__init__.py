"""Estimator modules, one per method; the public names are re-exported by :mod:`subspacelab`."""
