"""Jobs: Postgres-held state for work that Dramatiq delivers to worker pools."""
