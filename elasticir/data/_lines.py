"""Line-level reading shared by the text-format readers: gzip, UTF-8 checks, line numbers.

Files are read in binary and decoded one line at a time, so a bad byte is reported with the
line it is on, and so only ``\\n`` ends a line (text mode would also split JSON strings on a
lone ``\\r``).
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from os import PathLike
from typing import BinaryIO

from elasticir.data.errors import InputFormatError

StrPath = str | PathLike[str]


def open_binary(path: StrPath) -> BinaryIO:
    """Open ``path`` for binary reading, decompressing it when its name ends in ``.gz``."""
    if str(path).endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _bad_bytes(raw: bytes, err: UnicodeDecodeError) -> str:
    """A short readable window around the offending bytes, for the error message."""
    window = raw[max(0, err.start - 20) : err.end + 20]
    return window.decode("utf-8", errors="backslashreplace").rstrip("\r\n")


def decode_line(path: StrPath, lineno: int, raw: bytes) -> str:
    """Decode one raw line as UTF-8 and drop its line end (``\\n`` or ``\\r\\n``)."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputFormatError(path, lineno, "UTF-8 text", got=_bad_bytes(raw, err)) from None
    if lineno == 1 and line.startswith("\ufeff"):  # byte-order mark from Windows editors
        line = line[1:]
    return line.rstrip("\r\n")


def iter_lines(path: StrPath) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for each non-blank line; line numbers are 1-based."""
    lineno = 0
    try:
        with open_binary(path) as fh:
            for lineno, raw in enumerate(fh, 1):
                if raw.isspace():
                    continue
                yield lineno, decode_line(path, lineno, raw)
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise InputFormatError(path, lineno + 1, "a complete gzip stream", got=str(err)) from None


def count_nonblank_lines(path: StrPath) -> int:
    """Count non-blank lines without decoding them (fast enough for progress bars)."""
    with open_binary(path) as fh:
        return sum(1 for raw in fh if not raw.isspace())


def csv_unquote(field: str) -> str:
    """Undo CSV quoting of one tab-separated field, as DPR's ``csv.reader`` would.

    DPR's files (and Pyserini's copies of them) wrap a field in double quotes and double the
    quotes inside when it contains a quote character. Only a field that is quoted exactly
    that way is unquoted; any other field is returned unchanged, so hand-written TSV lines
    such as ``"Heroes" by Bowie`` keep their text.
    """
    if len(field) < 2 or field[0] != '"' or field[-1] != '"':
        return field
    inner = field[1:-1]
    if '"' in inner.replace('""', ""):
        return field
    return inner.replace('""', '"')


def split_tsv_row(line: str) -> list[str]:
    """Split a line on tabs and undo DPR-style CSV quoting of each field."""
    fields = line.split("\t")
    if '"' not in line:  # the common case: nothing to unquote
        return fields
    return [csv_unquote(f) for f in fields]
