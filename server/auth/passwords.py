"""Argon2id password hashing for local accounts."""

from __future__ import annotations

import threading

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from workers.cpus import usable

_hasher = PasswordHasher()
# Each hash holds 64 MiB for its half second of CPU (it lets go of the GIL), and a
# burst of sign-ins would otherwise take 64 MiB apiece, up to the server's whole thread
# pool: a memory exhaustion anyone can send. More at once than there are CPUs adds
# memory, not speed.
MAX_CONCURRENT_HASHES = 4
_slots = threading.BoundedSemaphore(max(1, min(usable(), MAX_CONCURRENT_HASHES)))
# Verified when the username does not exist, so a miss costs as long as a wrong password.
# Made on first use: an Argon2 hash takes 64 MiB, which idle workers need not pay.
_dummy: list[str] = []


def _dummy_hash() -> str:
    if not _dummy:
        _dummy.append(hash_password("not-a-real-password"))
    return _dummy[0]


MIN_PASSWORD_LENGTH = 8


def hash_password(password: str) -> str:
    with _slots:
        return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    stored = password_hash or _dummy_hash()
    try:
        with _slots:
            return _hasher.verify(stored, password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False
