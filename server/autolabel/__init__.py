"""Auto-labeling: a registry model pre-labels a project's images in a GPU pool."""
