"""Projects, their ordered class lists and their members."""
