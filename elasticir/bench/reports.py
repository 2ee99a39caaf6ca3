"""Where a benchmark writes its report, and its progress lines."""

from __future__ import annotations

import sys
import time
from pathlib import Path


def report_path(out: Path, suffix: str) -> Path:
    """``out`` with the report's ``suffix`` (``.json`` / ``.md``) appended: a dot inside the
    name (``results/rerank-cv-wise0.5``) is kept, where ``with_suffix`` would replace it; an
    ``out`` already ending in ``.json`` or ``.md`` has that ending swapped instead."""
    if out.suffix in (".json", ".md"):
        return out.with_suffix(suffix)
    return out.with_name(out.name + suffix)


def log(message: str) -> None:
    """``message`` on stderr after the time of day (``[HH:MM:SS] message``), flushed."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
