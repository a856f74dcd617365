"""The Open Inference Protocol (KServe V2) under /v2."""

from service.v2.routes import router

__all__ = ["router"]
