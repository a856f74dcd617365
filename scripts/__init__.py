"""Maintenance scripts, run as modules: python -m scripts.export_openapi, and so on."""
