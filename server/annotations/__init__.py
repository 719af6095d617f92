"""Boxes on images, saved with optimistic concurrency, and review actions."""
