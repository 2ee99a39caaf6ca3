"""Argument checks shared by configs and models across the library (no dependencies)."""

from __future__ import annotations

__all__ = ["check_int"]


def check_int(name: str, value: object, least: int = 1, *, optional: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is an int >= ``least`` (or None if ``optional``)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        what = {1: "a positive integer", 0: "a non-negative integer"}.get(
            least, f"an integer >= {least}"
        )
        raise ValueError(f"{name} must be {what}{' or None' if optional else ''}, got {value!r}")
