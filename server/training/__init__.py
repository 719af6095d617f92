"""Training YOLO models on a project's reviewed data, in a GPU pool."""
