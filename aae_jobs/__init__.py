"""What the API (``service/``) and the training workers (``worker/``) share, in one place:
the job contract (``aae_jobs.contract``), the settings base (``aae_jobs.settings``) and
the log lines' ids and format (``aae_jobs.logs``).

Both sides import this package and never each other. It imports pydantic and the
standard library only: no web framework, no queue, no Redis client.
"""
