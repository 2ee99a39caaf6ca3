"""Crash-safe output: a file or directory appears complete under its final name, or not at all.

Work in progress lives beside its target under a hidden name that says who made it,
``.tmp-<name>.<host>-<pid>.<random>``. A process killed mid-write leaves such a name behind;
the next write of the same target removes it once its writer is gone (a process of this
host that no longer runs, or any leftover untouched for ``STALE_SECONDS``). Files and
directories are created with the permissions the umask allows, like any ``open``.

Replacing a directory swaps the new one in with one atomic ``renameat2(RENAME_EXCHANGE)``
where the kernel and file system offer it; elsewhere the old one is first renamed to
``.old-<name>.<host>-<pid>`` and, should a kill land between the two renames, the next write
of that target puts it back.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "STALE_SECONDS",
    "atomic_dir",
    "atomic_file",
    "apply_umask",
    "check_writable",
    "writer_tag",
    "remove_dead_leftovers",
    "temporary_dir_beside",
]

# A leftover whose writer cannot be checked (another host, or an older name without one) is
# removed only when untouched this long; a live writer renames its files within seconds.
STALE_SECONDS = 3600
_TMP = ".tmp-"
_OLD = ".old-"


def writer_tag() -> str:
    """``<host>-<pid>``: who writes a temporary name (dots would confuse the name's parts)."""
    host = socket.gethostname().replace(".", "_").replace("-", "_") or "host"
    return f"{host}-{os.getpid()}"


def _writer_gone(owner: str) -> bool | None:
    """True when ``owner`` (``<host>-<pid>``) is a process of this host that no longer runs;
    None when that cannot be told (another host, or not such a name)."""
    host, _, pid_text = owner.rpartition("-")
    if not pid_text.isdigit() or host != writer_tag().rpartition("-")[0]:
        return None
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, run by another user
        return False
    return False


def _leftover_owner(name: str) -> str:
    """The ``<host>-<pid>`` of ``.tmp-<name>.<host>-<pid>.<random>`` or
    ``.old-<name>.<host>-<pid>`` (neither part holds a dot), or '' for any other name."""
    parts = name.rsplit(".", 2)
    for part in parts[-2:]:
        host, _, pid = part.rpartition("-")
        if host and pid.isdigit():
            return part
    return ""


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_dead_leftovers(directory: str | os.PathLike[str], name: str = "") -> list[Path]:
    """Remove ``.tmp-<name>*`` entries of ``directory`` whose writer is gone; return them.

    With ``name`` only the leftovers of that target are considered (``.tmp-run.trec.*``);
    without, every ``.tmp-*`` entry (a store directory's shards in progress). A ``.old-<name>``
    copy left by a kill between the two renames of :func:`atomic_dir` is put back when the
    target is missing, and removed when it is there again.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed: list[Path] = []
    cutoff = time.time() - STALE_SECONDS
    for leftover in sorted(directory.glob(f"{_TMP}{name}*")):
        owner = _leftover_owner(leftover.name)
        gone = _writer_gone(owner) if owner else None
        try:
            old = leftover.lstat().st_mtime < cutoff
        except FileNotFoundError:
            continue  # renamed into place by its writer meanwhile
        if gone or (gone is None and old):
            _remove(leftover)
            removed.append(leftover)
    if name:
        target = directory / name
        for old_copy in sorted(directory.glob(f"{_OLD}{name}.*")):
            if _writer_gone(_leftover_owner(old_copy.name)) is False:
                continue  # its writer is between the two renames right now
            if not target.exists():
                os.replace(old_copy, target)  # a kill landed between the renames: undo
            else:
                _remove(old_copy)
                removed.append(old_copy)
    return removed


def _umask() -> int:
    """The process umask, read without changing it where the kernel shows it."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: the classic read, which sets it back at once
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike[str]) -> None:
    """Give ``path`` the mode a new file (or directory) gets under the process umask: for
    files written by libraries that leave ``0600`` temporary files behind."""
    base = 0o777 if Path(path).is_dir() else 0o666
    os.chmod(path, base & ~_umask())


@contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed into place.

    On any exception the target is untouched and the temporary file removed; after a kill it
    stays under its ``.tmp-`` name, which no reader looks at and the next write removes.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_leftovers(final.parent, final.name)
    fd, tmp_name = tempfile.mkstemp(prefix=f"{_TMP}{final.name}.{writer_tag()}.", dir=final.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs follow the umask
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def temporary_dir_beside(path: str | os.PathLike[str], tag: str) -> Iterator[Path]:
    """A scratch directory beside ``path`` (``.tmp-<name>-<tag>.<owner>.<random>``), removed
    on exit; one left by a kill is removed by the next write of ``path``."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(
        tempfile.mkdtemp(prefix=f"{_TMP}{final.name}-{tag}.{writer_tag()}.", dir=final.parent)
    )
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2`` with ``RENAME_EXCHANGE``); False when
    the platform or file system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return result == 0


@contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``path``; on success it replaces ``path``.

    A previous directory at ``path`` stays in place until the new one is complete, so a
    half-built index never replaces a good one. ``path`` must be a directory or absent:
    a file there raises ``FileExistsError`` before anything is written.
    """
    final = Path(path)
    if final.exists() and not final.is_dir():
        raise FileExistsError(f"{final} is a file, not a directory; refusing to replace it")
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_leftovers(final.parent, final.name)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP}{final.name}.{writer_tag()}.", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 directories
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists() and _exchange(tmp, final):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old directory
        return
    old = final.with_name(f"{_OLD}{final.name}.{writer_tag()}")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def check_writable(
    path: str | os.PathLike[str], what: str = "output", *, directory: bool = False
) -> None:
    """Raise ``ValueError`` when ``path`` could not be written, before any work is done.

    A long run must not end in a ``PermissionError`` traceback at its last step. The nearest
    existing ancestor must be a directory in which a file can really be created (a probe
    file, removed at once: permission bits alone do not tell, e.g. for root or read-only
    mounts); nothing else is created. A ``directory`` output is built beside its path and
    renamed into place, so the same check applies to its parent.
    """
    target = Path(path)
    if target.is_dir() and not directory:
        raise ValueError(f"cannot write {what} {target}: it is a directory")
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"cannot write {what} {target}: {parent} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=f"{_TMP}probe.{writer_tag()}.", dir=parent)
    except OSError as err:
        raise ValueError(
            f"cannot write {what} {target}: {parent} is not writable ({err.strerror})"
        ) from None
    os.close(fd)
    os.unlink(probe)
    if target.exists() and not os.access(target, os.W_OK):
        raise ValueError(f"cannot write {what} {target}: it exists and is not writable")
