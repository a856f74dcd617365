"""HTTP plumbing every room uses: errors, auth, dependencies, logs, limits, metrics, schemas."""
