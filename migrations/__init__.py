"""Alembic migrations for the Oculab schema."""
