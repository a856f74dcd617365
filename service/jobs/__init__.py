"""Training jobs and sweeps on the job queue: submitting and following them, bodies, metrics."""
