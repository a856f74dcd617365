"""Adversarial Autoencoders (Makhzani et al., 2015): models, data, training, checkpoints.

This package is the library under the service and the workers. It depends on
torch, numpy, safetensors and the standard library only: never on the web
framework, the job queue or a settings layer.
"""

__version__ = "0.1.0"
