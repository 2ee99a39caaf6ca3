"""Directories of shards computed from a corpus: embedding stores and DiPair token caches.

Both are caches of what an encoder made of a corpus, written shard by shard so that a kill
loses nothing and ``n`` processes (``--shard i/n``) can fill one directory together::

    meta.json            what made the shards (encoder, level, dims, ...) and the corpus's
                         content key (:class:`~elasticir.data.corpus.CorpusDigest`)
    shard-00000.ids      one doc id per line, in corpus order
    shard-00000.npy      the arrays of the same rows (written last: it proves the shard whole)
    .lock, .meta.lock    advisory locks (see :class:`DirectoryLock`)

The cache is keyed on the corpus's **content**, not its path: each shard's passages have a
hash in ``meta.json``. A writer whose corpus differs from what the directory holds re-encodes
exactly the shards whose passages changed (and says so), but only when no other process is
writing there; if one is, it is refused, so two writers with different corpora can never both
report success over one directory. A shard that does not read back as written (truncated,
random bytes, a wrong row count) is re-encoded by the next writer and named by readers.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from elasticir.data.errors import InputFormatError, MissingResourceError
from elasticir.data.manifest import META_FILE, read_json_object, write_json

try:  # advisory locks; on platforms without fcntl, writers are not serialised
    import fcntl
except ImportError:  # pragma: no cover - not on Linux or macOS
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "DirectoryBusyError",
    "DirectoryLock",
    "ShardedDirectory",
    "check_unchanged",
    "load_array",
    "needs_encoding",
    "open_sharded_meta",
    "shard_number",
    "shard_problem",
]

_SHARD_NAME = re.compile(r"^shard-(\d{5,})\.")


class DirectoryBusyError(ValueError):
    """Another process is writing the directory from a different corpus."""


def shard_number(path: Path) -> int | None:
    """``shard-00012.npy`` -> 12; None for any other name."""
    match = _SHARD_NAME.match(path.name)
    return int(match.group(1)) if match else None


class DirectoryLock:
    """Who is using a shard directory, by ``flock`` on its ``.lock`` file.

    Every writer and reader holds a shared lock while it works. Resetting shards (the corpus
    changed) needs the exclusive lock, which :meth:`try_exclusive` takes only when nobody
    else holds the directory. ``meta()`` serialises the read-compare-write of ``meta.json``.
    A writer's directory is created on entry; a ``reader`` on a read-only directory (a store
    shipped on a read-only mount) goes on without a lock, since nobody can write there.
    """

    def __init__(self, directory: str | os.PathLike[str], *, reader: bool = False) -> None:
        self.directory = Path(directory)
        self.reader = reader
        self._fd: int | None = None

    def __enter__(self) -> DirectoryLock:
        if not self.reader:
            self.directory.mkdir(parents=True, exist_ok=True)
        try:
            self._fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            if not self.reader:
                raise
            return self
        if fcntl is not None:
            fcntl.flock(self._fd, fcntl.LOCK_SH)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None

    def try_exclusive(self) -> bool:
        """Upgrade to the exclusive lock if nobody else holds the directory; else False.

        On failure the shared lock is taken again (``flock`` drops it while converting).
        """
        if fcntl is None or self._fd is None:
            return True
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fcntl.flock(self._fd, fcntl.LOCK_SH)
            return False
        return True

    def shared(self) -> None:
        """Back from exclusive to shared."""
        if fcntl is not None and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_SH)

    @contextlib.contextmanager
    def meta(self) -> Iterator[None]:
        fd = os.open(self.directory / ".meta.lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


class ShardedDirectory:
    """Read access to a directory of ``meta.json`` and ``shard-NNNNN.*`` files.

    A subclass names its ``meta.json`` format, the keys its meta must hold, the files of one
    shard (``SHARD_SUFFIXES``, the ``.npy`` last) and what its errors say: ``_NOT_ONE`` when there
    is no ``meta.json``, ``_UNFINISHED`` when the corpus was not read to its end (stores of
    older versions), ``_INCOMPLETE`` (with ``{count}`` and ``{shown}``) when shards are
    missing, ``_REBUILD`` how to re-make a shard that does not read.
    """

    _FORMAT: ClassVar[str]
    _NOT_ONE: ClassVar[str]
    _UNFINISHED: ClassVar[str]
    _INCOMPLETE: ClassVar[str]
    _REBUILD: ClassVar[str] = "rerun the command that wrote it, on the same corpus"
    SHARD_SUFFIXES: ClassVar[tuple[str, ...]] = (".ids", ".npy")
    NOUN: ClassVar[str] = "directory"  # what the messages call one ("store", "cache")
    HOLDS: ClassVar[str] = "shards"  # and what it holds
    _REQUIRED: ClassVar[Mapping[str, Any]] = {"format": str, "dim": int}
    _OPTIONAL: ClassVar[Mapping[str, Any]] = {"num_shards": int, "num_passages": int}

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        meta_path = self.path / META_FILE
        if not meta_path.is_file():
            raise MissingResourceError(f"{self.path}: {self._NOT_ONE}")
        self.meta: dict[str, Any] = read_json_object(
            meta_path, self._REQUIRED, optional=self._OPTIONAL, what=f"{self._FORMAT} meta"
        )
        if self.meta.get("format") != self._FORMAT:
            raise InputFormatError(meta_path, None, f'"format": "{self._FORMAT}"')

    @classmethod
    def holds_one(cls, path: str | os.PathLike[str]) -> bool:
        """True when ``path`` has a ``meta.json`` naming this format (readable or not)."""
        meta = Path(path) / META_FILE
        if not meta.is_file():
            return False
        try:
            return read_json_object(meta).get("format") == cls._FORMAT
        except (InputFormatError, MissingResourceError):
            return f'"{cls._FORMAT}"' in meta.read_text(encoding="utf-8", errors="replace")

    @classmethod
    def check_usable(cls, path: str | os.PathLike[str]) -> None:
        """Refuse ``path`` unless it is absent, an empty directory or one of ours.

        Writing a cache into a folder that holds anything else would mix files into it.
        """
        path = Path(path)
        if not path.exists():
            return
        if not path.is_dir():
            raise ValueError(f"{path} is a file; it cannot hold a {cls._FORMAT} directory")
        if not any(path.iterdir()) or cls.holds_one(path):
            return
        raise ValueError(
            f"{path} exists and is not a {cls._FORMAT} directory; refusing to write shards "
            "into it (choose another path)"
        )

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    def shard_path(self, number: int) -> Path:
        """The ``.npy`` of shard ``number`` (present or not)."""
        return self.path / f"shard-{number:05d}.npy"

    def shard_paths(self) -> list[Path]:
        """The ``.npy`` files of the shards on disk, in order (only shards of this corpus)."""
        total = self.meta.get("num_shards")
        if total is None:
            return sorted(self.path.glob("shard-*.npy"))
        return [p for p in map(self.shard_path, range(total)) if p.is_file()]

    def missing_shards(self) -> list[int]:
        """Shards not yet on disk; empty once the directory is complete."""
        total = self.meta.get("num_shards")
        if total is None:
            raise MissingResourceError(f"{self.path}: {self._UNFINISHED}")
        return [s for s in range(total) if not self.shard_path(s).is_file()]

    def _check_complete(self) -> None:
        """Raise ``MissingResourceError`` naming the shards not on disk yet, if any."""
        missing = self.missing_shards()
        if missing:
            shown = ", ".join(str(s) for s in missing[:10]) + (" ..." if len(missing) > 10 else "")
            message = self._INCOMPLETE.format(count=len(missing), shown=shown)
            raise MissingResourceError(f"{self.path}: {message}")

    def _corrupt(self, path: Path, expected: str, got: str) -> InputFormatError:
        return InputFormatError(path, None, expected, got, hint=self._REBUILD)

    def remove_shard(self, number: int) -> None:
        """Delete every file of shard ``number`` (the ``.npy`` first: it marks a shard done)."""
        for suffix in reversed(self.SHARD_SUFFIXES):
            self.shard_path(number).with_suffix(suffix).unlink(missing_ok=True)


def _read_ids(path: Path) -> list[str] | None:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None


def load_array(path: Path, mmap: bool = True) -> Any:
    """``np.load`` of a shard file, every failure (truncated, random bytes, unreadable) as
    one ``ValueError`` with the reason."""
    import numpy as np

    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(reason[:200]) from None


def shard_problem(
    directory: ShardedDirectory, number: int, doc_ids: Sequence[str], shapes: Mapping[str, tuple]
) -> str | None:
    """Why shard ``number`` does not hold ``doc_ids`` as written, or None when it does.

    ``shapes`` maps each array suffix (``.npy``, ``.len``, ...) to the shape it must have.
    """
    npy = directory.shard_path(number)
    ids = _read_ids(npy.with_suffix(".ids"))
    if ids is None:
        return "its .ids file is missing or unreadable"
    if ids != list(doc_ids):
        return f"its .ids file lists {len(ids)} ids that are not the corpus's {len(doc_ids)}"
    for suffix, shape in shapes.items():
        try:
            array = load_array(npy.with_suffix(suffix))
        except ValueError as err:
            return f"its {suffix} file does not load ({err})"
        if tuple(array.shape) != tuple(shape):
            return f"its {suffix} file holds shape {tuple(array.shape)}, expected {tuple(shape)}"
    return None


def needs_encoding(
    directory: ShardedDirectory,
    number: int,
    doc_ids: Sequence[str],
    shapes: Mapping[str, tuple],
    mine: bool,
    notes: list[str],
) -> bool:
    """Whether a writer must encode shard ``number`` now: it is missing and ``mine`` (this
    writer's i/n part), or it is on disk but does not read back as written. A damaged shard
    is removed and re-made by whoever finds it, whatever its part (nobody else would), and
    the repair is added to ``notes``."""
    target = directory.shard_path(number)
    if not target.exists():
        return mine
    problem = shard_problem(directory, number, doc_ids, shapes)
    if problem is None:
        return False
    notes.append(f"{target}: {problem}; encoded again")
    directory.remove_shard(number)
    return True


def check_unchanged(
    corpus: str | os.PathLike[str], shards: Sequence[str], shard_size: int, number: int, passages
) -> None:
    """The corpus read while encoding must be the one checked at the start (``shards``: its
    digest's shard hashes); it may have been edited meanwhile."""
    from elasticir.data.corpus import passage_key

    if number >= len(shards) or passage_key(passages) != shards[number]:
        raise ValueError(
            f"{corpus} changed while it was being encoded (passages from "
            f"{number * shard_size + 1} on); run the command again"
        )


def open_sharded_meta(
    directory: Path,
    meta: dict[str, Any],
    checked: Sequence[str],
    lock: DirectoryLock,
    kind: type[ShardedDirectory],
    defaults: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Create, adopt or reset the ``meta.json`` of ``directory`` for a writer of ``meta``.

    ``checked`` keys (model, level, dims, shard size...) must equal what the directory holds,
    else ``ValueError``: those need another directory. A different ``"content"`` (the
    corpus changed, or a store from before content keys) resets the shards whose passages
    changed, if no other process holds the directory (:class:`DirectoryBusyError`
    otherwise). Returns the meta in force and notes for the user about what was reset.
    """
    path = directory / META_FILE
    notes: list[str] = []
    with lock.meta():
        if not path.exists():
            write_json(path, meta)
            return meta, notes
        try:
            existing: dict[str, Any] | None = {**(defaults or {}), **read_json_object(path)}
        except InputFormatError as err:
            existing, reason = None, f"its meta.json did not read ({err})"
        if existing is not None:
            if existing.get("format") != meta["format"]:
                raise ValueError(f"{directory} is not a {meta['format']} directory")
            differ = [key for key in checked if existing.get(key) != meta.get(key)]
            if differ:
                details = "; ".join(
                    f"{key}: {kind.NOUN} has {existing.get(key)!r}, asked {meta.get(key)!r}"
                    for key in differ
                )
                raise ValueError(
                    f"{directory} holds {kind.HOLDS} made differently ({details}); "
                    "use another directory or delete this one"
                )
            if existing.get("content") == meta["content"]:
                if existing.get("corpus") != meta.get("corpus"):
                    write_json(path, {**existing, "corpus": meta.get("corpus")})
                return {**existing, "corpus": meta.get("corpus")}, notes
            reason = (
                "the corpus's content changed since it was written"
                if existing.get("content")
                else "it was written before stores recorded their corpus's content"
            )
        if not lock.try_exclusive():
            raise DirectoryBusyError(
                f"{directory} is being written by another process from a different corpus; "
                "refusing to write it too (wait for that process to finish, or use another "
                "output path)"
            )
        try:
            kept, reset = _reset_changed_shards(directory, existing, meta, kind)
            write_json(path, meta)
        finally:
            lock.shared()
    if kept or reset:
        notes.append(
            f"{directory}: {reason}; {reset} shard(s) dropped to be encoded again, {kept} kept"
        )
    return meta, notes


def _reset_changed_shards(
    directory: Path,
    existing: Mapping[str, Any] | None,
    meta: Mapping[str, Any],
    kind: type[ShardedDirectory],
) -> tuple[int, int]:
    """Delete the shard files whose passages are not those of ``meta``; return (kept, reset)."""
    old = ((existing or {}).get("content") or {}).get("shards") or []
    new = meta["content"]["shards"]
    numbers = sorted({n for p in directory.glob("shard-*") if (n := shard_number(p)) is not None})
    kept = reset = 0
    for number in numbers:
        same = number < len(old) and number < len(new) and old[number] == new[number]
        if same:
            kept += 1
            continue
        for suffix in reversed(kind.SHARD_SUFFIXES):
            (directory / f"shard-{number:05d}{suffix}").unlink(missing_ok=True)
        reset += 1
    return kept, reset
