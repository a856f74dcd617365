"""Plots drawn with matplotlib: a version's latent scatter and training curves, a sweep's."""
