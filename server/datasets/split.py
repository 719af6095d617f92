"""The train/val draw that exports and training snapshots share: a pure function of the
seed and the image's bytes, so the same request splits the same way every time and
an image keeps its side when others are added."""

from __future__ import annotations

import hashlib


def drawn_for_val(seed: int, sha256: str, val_fraction: float) -> bool:
    digest = hashlib.sha256(f"{seed}:{sha256}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < val_fraction
