"""The REST service: inference on the checkpoint store's models, the store's models, jobs."""
