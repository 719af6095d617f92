"""Personal API tokens for scripts and CI pipelines."""
