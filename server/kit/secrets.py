"""Random credentials and their stored form."""

from __future__ import annotations

import hashlib
import hmac
import secrets

API_TOKEN_PREFIX = "ocl_"  # noqa: S105 - a public prefix


def new_token(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    # Tokens carry 256 random bits, so a fast hash is enough: nothing to brute-force.
    return hashlib.sha256(token.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
