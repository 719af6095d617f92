"""Oculab server: API, domain logic, ORM models, settings and CLI."""

__version__ = "0.1.0"
