"""The keys of training runs and caches.

Checkpoints, finished models and caches are keyed by :func:`digest` of what they depend on (a
config's ``training_fields()``, teacher fingerprints, :func:`texts_digest` of the texts), so a
change of any of those never resumes or reuses another run's files. What is hashed, and how,
must not change: existing runs resume, and existing caches are found, by these keys.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

__all__ = ["digest", "texts_digest"]


def digest(value: object) -> str:
    """16 hex digits of SHA-256 over the sorted-key JSON of ``value``."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def texts_digest(texts: Sequence[str]) -> str:
    """Hex SHA-256 of ``texts`` in order (each ended by a NUL byte)."""
    hashed = hashlib.sha256()
    for text in texts:
        hashed.update(text.encode())
        hashed.update(b"\0")
    return hashed.hexdigest()
