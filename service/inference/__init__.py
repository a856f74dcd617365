"""Serving the models: the registry, batched forward passes, images in and out, statistics."""
