"""What the API (``service/``) and the training workers (``worker/``) share, in one place:
the job contract (``aae_jobs.contract``) and the settings base (``aae_jobs.settings``).

Both sides import this package and never each other. It imports pydantic and the
standard library only: no web framework, no queue, no Redis client.
"""
