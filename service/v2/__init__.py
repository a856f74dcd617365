"""The Open Inference Protocol (KServe V2) under /v2."""

from service.v2.routes import openapi_components, router

__all__ = ["openapi_components", "router"]
