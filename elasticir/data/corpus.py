"""Passage corpora: Pyserini JsonCollection, BEIR ``corpus.jsonl`` and MS MARCO / DPR TSV.

Corpora can be far larger than memory (MS MARCO has 8.8M passages, DPR Wikipedia 21M), so
:func:`iter_corpus` streams; only the set of ids already seen is kept, to reject duplicates.

Accepted layouts, chosen by the path:

* ``*.jsonl`` / ``*.jsonl.gz``: one JSON object per line, either Pyserini
  ``{"id", "contents"[, "title"]}`` or BEIR ``{"_id", "text"[, "title"]}``; the layout is
  detected from the first record of each file and every later record must follow it.
* ``*.tsv`` / ``*.tsv.gz``: MS MARCO ``pid<TAB>text`` or ``pid<TAB>text<TAB>title``; DPR's
  ``psgs_w100.tsv`` is recognised by its ``id<TAB>text<TAB>title`` header, and its
  CSV-quoted fields are unquoted.
* a directory: a Pyserini JsonCollection folder; every ``*.jsonl``, ``*.jsonl.gz`` and
  ``*.json`` file below it, in sorted path order. A ``.json`` file may hold JSON lines, one
  document, or an array of documents, as Pyserini allows.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from elasticir.data._lines import (
    StrPath,
    count_nonblank_lines,
    csv_unquote,
    decode_line,
    iter_lines,
    open_binary,
)
from elasticir.data.errors import InputFormatError
from elasticir.data.records import Passage

__all__ = [
    "CorpusDigest",
    "chunks",
    "count_passages",
    "digest_corpus",
    "iter_corpus",
    "load_passages",
    "write_corpus",
]

CORPUS_FORMATS = (
    "a corpus file ending in .jsonl, .jsonl.gz, .tsv, .tsv.gz or a JsonCollection directory"
)
_COLLECTION_SUFFIXES = (".jsonl", ".jsonl.gz", ".json")
_DPR_TSV_HEADER = ["id", "text", "title"]
_WHITESPACE = re.compile(r"\s")
_JSON_SPACE = re.compile(r"[ \t\n\r]*")


@dataclass(frozen=True)
class _JsonLayout:
    name: str
    id_key: str
    text_key: str


_PYSERINI = _JsonLayout('Pyserini JsonCollection {"id", "contents"}', "id", "contents")
_BEIR = _JsonLayout('BEIR {"_id", "title", "text"}', "_id", "text")


def iter_corpus(path: StrPath) -> Iterator[Passage]:
    """Stream the passages of a corpus file or JsonCollection directory, in file order.

    The format is checked when this is called; records are read lazily. Raises
    :class:`InputFormatError` (naming file and line) on malformed input, including a
    duplicate doc id anywhere in the corpus, and :class:`FileNotFoundError` when ``path``
    does not exist.
    """
    return _iter_files(_corpus_files(Path(path)))


def count_passages(path: StrPath) -> int:
    """Count passages cheaply (non-blank lines, nothing parsed), e.g. for a progress bar.

    The count is exact for well-formed input; it is not a validation.
    """
    files = _corpus_files(Path(path))
    total = 0
    for file, kind in files:
        if kind == "json" and _json_shape(file) != "lines":
            total += sum(1 for _ in _iter_json_document(file))
            continue
        total += count_nonblank_lines(file)
        if kind == "tsv" and _has_dpr_header(file):
            total -= 1
    return total


def load_passages(path: StrPath, doc_ids: Collection[str] | None = None) -> dict[str, Passage]:
    """Load a corpus into ``{doc_id: Passage}``; with ``doc_ids``, only those passages.

    With ``doc_ids`` the scan stops as soon as all of them are found (so the rest of the file
    is not validated); ids that the corpus lacks are simply absent from the result.
    """
    wanted = None if doc_ids is None else set(doc_ids)
    if wanted is not None and not wanted:
        return {}
    passages: dict[str, Passage] = {}
    for passage in iter_corpus(path):
        if wanted is None:
            passages[passage.doc_id] = passage
        elif passage.doc_id in wanted:
            passages[passage.doc_id] = passage
            if len(passages) == len(wanted):
                break
    return passages


@dataclass(frozen=True)
class CorpusDigest:
    """What a corpus holds, as hashes: the key of everything cached from it.

    ``sha256`` covers every passage's id and encoder text (title and body) in reading order
    (through the shard hashes, so it is defined for one ``shard_size``). It changes with any
    edit that changes what an encoder would see, and with nothing else (moving the file,
    re-compressing it, reformatting its JSON). ``shards`` hashes each run of ``shard_size``
    passages alike, so a cache in shards can keep what did not change.
    """

    num_passages: int
    sha256: str
    shard_size: int
    shards: tuple[str, ...]

    def to_meta(self) -> dict[str, object]:
        return {
            "num_passages": self.num_passages,
            "sha256": self.sha256,
            "shard_size": self.shard_size,
            "shards": list(self.shards),
        }


def write_corpus(passages: Collection[Passage], path: StrPath) -> Path:
    """Write ``passages`` as a Pyserini JSONL corpus (``{"id", "contents"[, "title"]}``, in
    the given order) at ``path``, atomically: e.g. the candidates of a run, so that a token
    cache or an index is built for those passages only."""
    from elasticir.data.files import atomic_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for p in passages:
            record = {"id": p.doc_id, "contents": p.text}
            if p.title:
                record["title"] = p.title
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def passage_key(passages: Collection[Passage]) -> str:
    """The hash of one shard's passages (see :class:`CorpusDigest`)."""
    digest = hashlib.sha256()
    for passage in passages:
        _feed(digest, passage)
    return digest.hexdigest()[:16]


def _feed(digest: Any, passage: Passage) -> None:
    # NUL cannot occur in an id and separates id from text unambiguously.
    digest.update(passage.doc_id.encode("utf-8") + b"\0")
    digest.update(passage.encoder_text().encode("utf-8", "surrogatepass") + b"\0")


def digest_corpus(
    path: StrPath, shard_size: int = 4096, advance: Callable[[int], None] | None = None
) -> CorpusDigest:
    """Read and validate the whole corpus once and return its :class:`CorpusDigest`.

    This is the check that runs before any expensive work: a malformed line or a duplicate
    id anywhere raises :class:`InputFormatError` here, before anything is encoded or written.
    ``advance(n)`` reports progress.
    """
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}")
    whole = hashlib.sha256()
    shards: list[str] = []
    count = 0
    for chunk in chunks(iter_corpus(path), shard_size):
        shard = hashlib.sha256()
        for passage in chunk:
            _feed(shard, passage)
        shards.append(shard.hexdigest()[:16])
        whole.update(shard.digest())
        count += len(chunk)
        if advance is not None:
            advance(len(chunk))
    return CorpusDigest(count, whole.hexdigest(), shard_size, tuple(shards))


def chunks(passages: Iterator[Passage], size: int) -> Iterator[list[Passage]]:
    """Consecutive lists of ``size`` passages (the last one shorter)."""
    while chunk := list(islice(passages, size)):
        yield chunk


# --- files -------------------------------------------------------------------------------


def _corpus_files(path: Path) -> list[tuple[Path, str]]:
    """The files to read and the kind of each: ``"jsonl"``, ``"json"`` or ``"tsv"``."""
    if not path.exists():
        raise FileNotFoundError(f"corpus not found: {path}")
    if path.is_dir():
        return _collection_files(path)
    if path.name.endswith((".jsonl", ".jsonl.gz")):
        return [(path, "jsonl")]
    if path.name.endswith((".tsv", ".tsv.gz")):
        return [(path, "tsv")]
    raise InputFormatError(path, None, CORPUS_FORMATS)


def _collection_files(directory: Path) -> list[tuple[Path, str]]:
    """The document files of a JsonCollection folder, in sorted relative-path order."""
    found = []
    for file in directory.rglob("*"):
        rel = file.relative_to(directory)
        # Hidden files include our own ``.tmp-`` outputs that are still being written.
        if any(part.startswith(".") for part in rel.parts) or not file.is_file():
            continue
        if file.name.endswith((".jsonl", ".jsonl.gz")):
            found.append((rel.as_posix(), file, "jsonl"))
        elif file.name.endswith(".json"):
            found.append((rel.as_posix(), file, "json"))
    if not found:
        raise InputFormatError(
            directory,
            None,
            "a JsonCollection directory with *.jsonl, *.jsonl.gz or *.json files",
            got="no such files",
        )
    found.sort()
    return [(file, kind) for _, file, kind in found]


def _iter_files(files: list[tuple[Path, str]]) -> Iterator[Passage]:
    seen: set[str] = set()  # across all files: a collection split in parts is one corpus
    for file, kind in files:
        if kind == "tsv":
            yield from _iter_tsv(file, seen)
        elif kind == "json" and _json_shape(file) != "lines":
            yield from _iter_json_records(file, _iter_json_document(file), seen)
        else:
            yield from _iter_json_records(file, _iter_json_lines(file), seen)


def _check_new_id(path: Path, lineno: int, doc_id: str, seen: set[str]) -> None:
    if not doc_id:
        raise InputFormatError(path, lineno, "a non-empty doc id", got=doc_id)
    if _WHITESPACE.search(doc_id):
        raise InputFormatError(
            path, lineno, "a doc id without whitespace (TREC run files cannot hold one)", doc_id
        )
    if doc_id in seen:
        raise InputFormatError(path, lineno, "unique doc ids", got=f"duplicate id {doc_id}")
    seen.add(doc_id)


# --- TSV ---------------------------------------------------------------------------------


def _has_dpr_header(path: Path) -> bool:
    with open_binary(path) as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.isspace():
                return decode_line(path, lineno, raw).split("\t") == _DPR_TSV_HEADER
    return False


def _iter_tsv(path: Path, seen: set[str]) -> Iterator[Passage]:
    dpr = False  # DPR's psgs_w100.tsv: header line, then CSV-quoted id / text / title
    first = True
    for lineno, line in iter_lines(path):
        fields = line.split("\t")
        if first:
            first = False
            if fields == _DPR_TSV_HEADER:
                dpr = True
                continue
        if len(fields) < 2 or len(fields) > 3:
            raise InputFormatError(path, lineno, "pid<TAB>text or pid<TAB>text<TAB>title", line)
        if dpr:
            fields = [csv_unquote(f) for f in fields]
        doc_id = fields[0]
        _check_new_id(path, lineno, doc_id, seen)
        yield Passage(doc_id, fields[1], fields[2] if len(fields) == 3 else "")


# --- JSON --------------------------------------------------------------------------------


def _iter_json_lines(path: Path) -> Iterator[tuple[int, object]]:
    """``(line, value)`` for each JSON value in a JSON-lines file."""
    for lineno, line in iter_lines(path):
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as err:
            raise InputFormatError(
                path, lineno, f"a JSON object ({err.msg} at column {err.colno})", line
            ) from None


def _json_shape(path: Path) -> str:
    """How a ``.json`` file holds documents: ``"lines"``, ``"array"`` or ``"document"``."""
    with open_binary(path) as fh:
        for lineno, raw in enumerate(fh, 1):
            if raw.isspace():
                continue
            line = decode_line(path, lineno, raw).strip()
            if line.startswith("["):
                return "array"
            try:
                json.loads(line)
            except json.JSONDecodeError:
                return "document"  # e.g. one pretty-printed object over many lines
            return "lines"
    return "lines"


def _iter_json_document(path: Path) -> Iterator[tuple[int, object]]:
    """``(line, value)`` for a ``.json`` file holding one document or an array of them.

    Such files are read whole (they are single documents or shards); line numbers are
    tracked so that errors point at the record.
    """
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        bad = data[err.start : err.end]
        raise InputFormatError(path, line, "UTF-8 text", got=repr(bad)) from None
    text = text.removeprefix("\ufeff")
    decoder = json.JSONDecoder()

    def decode_at(pos: int) -> tuple[object, int]:
        try:
            return decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise InputFormatError(
                path, err.lineno, f"JSON ({err.msg} at column {err.colno})"
            ) from None

    def line_of(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    pos = _JSON_SPACE.match(text, 0).end()
    if not text.startswith("[", pos):
        value, end = decode_at(pos)
        _expect_end(path, text, end, line_of)
        yield line_of(pos), value
        return
    pos = _JSON_SPACE.match(text, pos + 1).end()
    line, counted_to = line_of(pos), pos
    if text.startswith("]", pos):
        _expect_end(path, text, pos + 1, line_of)
        return
    while True:
        line += text.count("\n", counted_to, pos)  # incremental: files can be large
        counted_to = pos
        value, pos = decode_at(pos)
        yield line, value
        pos = _JSON_SPACE.match(text, pos).end()
        if text.startswith(",", pos):
            pos = _JSON_SPACE.match(text, pos + 1).end()
        elif text.startswith("]", pos):
            _expect_end(path, text, pos + 1, line_of)
            return
        else:
            got = text[pos : pos + 20] or "end of file"
            raise InputFormatError(path, line_of(pos), "',' or ']' in a JSON array", got)


def _expect_end(path: Path, text: str, pos: int, line_of: Callable[[int], int]) -> None:
    pos = _JSON_SPACE.match(text, pos).end()
    if pos < len(text):
        raise InputFormatError(path, line_of(pos), "end of file", got=text[pos : pos + 20])


def _iter_json_records(
    path: Path, values: Iterator[tuple[int, object]], seen: set[str]
) -> Iterator[Passage]:
    # The hot loop of corpus reading (millions of records): the common, valid case is
    # checked inline with exact type tests; anything else goes to _passage_error.
    layout: _JsonLayout | None = None
    layout_line = 0
    id_key = text_key = ""
    for lineno, record in values:
        if type(record) is not dict:
            raise InputFormatError(path, lineno, "a JSON object", got=json.dumps(record)[:120])
        if layout is None:
            layout, layout_line = _detect_layout(path, lineno, record), lineno
            id_key, text_key = layout.id_key, layout.text_key
        doc_id = record.get(id_key)
        text = record.get(text_key)
        title = record.get("title")
        if title is None:
            title = ""
        if (
            type(doc_id) is not str
            or type(text) is not str
            or type(title) is not str
            or not doc_id
            or doc_id in seen
            or _WHITESPACE.search(doc_id)
        ):
            doc_id = _passage_error(path, lineno, record, layout, layout_line, seen)
        seen.add(doc_id)
        yield Passage(doc_id, text, title)  # type: ignore[arg-type]


def _detect_layout(path: Path, lineno: int, record: dict) -> _JsonLayout:
    if "_id" in record:
        return _BEIR
    if "id" in record or "contents" in record:
        return _PYSERINI
    raise InputFormatError(
        path,
        lineno,
        f"a {_PYSERINI.name} or {_BEIR.name} object",
        got=f"keys {sorted(record)}",
    )


def _passage_error(
    path: Path,
    lineno: int,
    record: dict,
    layout: _JsonLayout,
    layout_line: int,
    seen: set[str],
) -> str:
    """Raise the error for a record that failed the fast check, or return its coerced id.

    The one record that passes is a numeric id: some converters write them, and they are
    ids all the same (TREC files hold them as text).
    """
    for key in (layout.id_key, layout.text_key):
        if key not in record:
            raise InputFormatError(
                path,
                lineno,
                f'a "{key}" field ({layout.name} layout, detected from line {layout_line})',
                got=f"keys {sorted(record)}",
            )
    raw_id = record[layout.id_key]
    if isinstance(raw_id, int) and not isinstance(raw_id, bool):
        doc_id = str(raw_id)
    elif isinstance(raw_id, str):
        doc_id = raw_id
    else:
        raise InputFormatError(
            path, lineno, f'a string in "{layout.id_key}"', got=json.dumps(raw_id)
        )
    for key in (layout.text_key, "title"):
        value = record.get(key)
        if not isinstance(value, str) and not (key == "title" and value is None):
            raise InputFormatError(path, lineno, f'a string in "{key}"', json.dumps(value)[:120])
    _check_new_id(path, lineno, doc_id, seen)
    return doc_id
