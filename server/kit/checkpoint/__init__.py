"""What a safe YOLO checkpoint looks like: its archive layout and the exact pickle
globals it may name. Plain data and zip reading, no torch: the API's upload scan
(server/registry/scan.py) and the worker's restricted loader (workers/ml/checkpoints.py)
apply the same rules."""
