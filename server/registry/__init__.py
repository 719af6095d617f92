"""The model registry: uploaded and trained YOLO weights, their lineage and metrics."""
