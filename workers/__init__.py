"""Dramatiq broker set-up and actors (the job system)."""
