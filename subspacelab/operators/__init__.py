"""Linear operators with forward and adjoint (MRI, CT, masks) and the conjugate-gradient solver."""
