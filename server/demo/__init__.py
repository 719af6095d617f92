"""Synthetic data so a new user sees the whole loop offline."""
