"""API keys: `dfl_` plus 32 random bytes (base32), shown once and stored as a SHA-256 hash.

A key carries 256 bits of entropy, so a plain SHA-256 (not a slow password hash) is
enough to make a stolen table useless, and a lookup is one indexed query."""

import base64
import hashlib
import secrets

KEY_PREFIX = "dfl_"
KEY_BYTES = 32
SHOWN_PREFIX_LENGTH = 12


def new_key() -> str:
    random = base64.b32encode(secrets.token_bytes(KEY_BYTES)).decode().rstrip("=").lower()
    return KEY_PREFIX + random


def key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def shown_prefix(key: str) -> str:
    """The part of a key that is safe to show again (to tell keys apart)."""
    return key[:SHOWN_PREFIX_LENGTH]


def looks_like_key(token: str) -> bool:
    return token.startswith(KEY_PREFIX)
