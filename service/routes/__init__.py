"""The HTTP routes, one router per resource (the Open Inference Protocol's: service.v2)."""
