"""Atomic file and directory writes, so that an interrupted run never leaves half a file.

Everything the project writes (checkpoints, bundles, reports, engine caches, masks) goes through
these helpers: the data is written next to its destination under a temporary name and renamed into
place, which is atomic on POSIX file systems. An existing destination is only replaced when the
caller says so (``overwrite=True``, the CLI's ``--force``).

An operating-system error on a path (permission denied, a read-only file system, a name too long,
a file where a folder is needed, a full disk) becomes one line naming the path, here, in
:func:`path_error`: the CLI prints it for any such error, whoever raised it, and
:func:`check_writable` finds the usual ones before any work starts.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Iterator

from runtime.errors import EdgeDeeplabError


_UMASK_LOCK = threading.Lock()
# errno values that mean "the disk cannot take this write", not "the program is wrong".
_NO_ROOM = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
            errno.EFBIG: "file too large for this file system"}


class DiskFullError(EdgeDeeplabError):
    """A write failed for lack of room; the message names the destination the user asked for."""

    def __init__(self, dest: str | os.PathLike, reason: str) -> None:
        self.reason = reason
        super().__init__(f"cannot write {dest}: {reason}; nothing was written there, free some space and run again")


def no_room_error(exc: BaseException, dest: str | os.PathLike) -> EdgeDeeplabError | None:
    """The one-line error for a write that failed because the disk is full, else None.

    Writes are atomic, so what failed left nothing behind; the message says so, because the
    first thing a user wonders after "disk full" is whether something is now half-written.
    """
    if isinstance(exc, DiskFullError):  # from a write inside this one: name the outer destination
        return DiskFullError(dest, exc.reason)
    if not isinstance(exc, OSError) or exc.errno not in _NO_ROOM:
        return None
    return DiskFullError(dest, _NO_ROOM[exc.errno])


# errno -> what it means for the path a user gave (the OS's own words are terse or misleading:
# "File exists" for a file standing where a folder must be made).
_PATH_PROBLEMS = {
    errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
    errno.EROFS: "it is on a read-only file system", errno.ENAMETOOLONG: "the name is too long for the file system",
    errno.ENOTDIR: "a part of the path is a file, not a folder", errno.EISDIR: "it is a folder, not a file",
    errno.ENOENT: "no such file or folder", errno.ELOOP: "too many levels of symbolic links",
    errno.EIO: "input/output error (a failing disk or card?)",
}
SHOWN_PATH = 120  # characters of a path a message shows; a longer one is cut in the middle


def shown(path: str | os.PathLike) -> str:
    """``path`` as an error line shows it: whole, or cut in the middle when very long (a 300-character
    name would otherwise fill the terminal)."""
    text = os.fsdecode(path)
    return text if len(text) <= SHOWN_PATH else f"{text[:60]}...{text[-50:]}"


def path_error(exc: OSError, path: str | os.PathLike | None = None, doing: str = "use") -> EdgeDeeplabError:
    """The one-line error for an operating-system error on a path: ``cannot DOING PATH: why``.

    ``path`` is the path the user named (the destination, not the temporary file beside it);
    without it, the path the error carries. A full disk keeps its own message (:func:`no_room_error`).
    """
    where = path if path is not None else (exc.filename if exc.filename is not None else None)
    full = no_room_error(exc, shown(where) if where is not None else "the output")
    if full is not None:
        return full
    reason = _PATH_PROBLEMS.get(exc.errno) or (exc.strerror.lower() if exc.strerror else str(exc) or type(exc).__name__)
    if where is None:
        return EdgeDeeplabError(f"operating-system error: {reason}")
    return EdgeDeeplabError(f"cannot {doing} {shown(where)}: {reason}")


def check_can_create(dest: str | os.PathLike) -> Path:
    """Fail in one line, before any work, when ``dest`` could not be created: a file stands where a
    folder on its path must be, the nearest existing folder is read-only or not writable, or a
    new name is longer than the file system allows. Returns ``dest`` as given."""
    dest = Path(dest)
    absolute = Path(os.path.abspath(dest))
    base = next(p for p in absolute.parents if os.path.lexists(p))  # "/" exists
    if not base.is_dir():
        raise EdgeDeeplabError(f"cannot write {shown(dest)}: {shown(base)} is a file, not a folder")
    try:
        limit = os.pathconf(base, "PC_NAME_MAX")
        read_only = bool(os.statvfs(base).f_flag & os.ST_RDONLY)
    except OSError as exc:
        raise path_error(exc, dest, "write") from None
    too_long = next((part for part in absolute.relative_to(base).parts if len(os.fsencode(part)) > limit), None)
    if too_long is not None:
        raise EdgeDeeplabError(f"cannot write {shown(dest)}: the name {shown(too_long)} has "
                               f"{len(os.fsencode(too_long))} bytes; this file system allows {limit}")
    if read_only:
        raise EdgeDeeplabError(f"cannot write {shown(dest)}: {shown(base)} is on a read-only file system")
    if not os.access(base, os.W_OK | os.X_OK):
        raise EdgeDeeplabError(f"cannot write {shown(dest)}: permission denied in {shown(base)}")
    return dest


def _concerns(exc: OSError, dest: Path, tmp: Path | None) -> bool:
    """Whether an error inside an atomic write is the write's own: an operating-system error on
    ``dest``, its temporary path or a folder on the way (or one naming no file, as a full disk
    seen by a library's writer). Another file's error (an input that cannot be read) keeps its
    own name, and a library's own error (no errno) stays what it is."""
    if exc.errno is None:
        return False
    if exc.filename is None:
        return True
    where = Path(os.path.abspath(os.fsdecode(exc.filename)))
    ours = [Path(os.path.abspath(dest))] + ([Path(os.path.abspath(tmp))] if tmp is not None else [])
    return any(where == p or where in p.parents or p in where.parents for p in ours)


def current_umask() -> int:
    """The process umask. ``os.umask`` can only be read by setting it, so set and restore it under a lock."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _honour_umask(path: Path, directory: bool) -> None:
    """Give a temporary file or folder the mode an ordinary ``open``/``mkdir`` would have.

    ``mkstemp``/``mkdtemp`` create 0600/0700 whatever the umask, which is right for secrets but
    not for bundles, checkpoints, reports and images: copied or mounted into the Jetson container,
    which runs as another, unprivileged user, they could not be read.
    """
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def check_writable(dest: str | os.PathLike, overwrite: bool) -> Path:
    """Fail early, before any work, if ``dest`` exists and may not be replaced, or cannot be written."""
    dest = Path(dest)
    try:
        exists = os.path.lexists(dest) and dest.exists()
    except OSError as exc:  # a name too long, a path through a file
        raise path_error(exc, dest, "write") from None
    if exists and not overwrite:
        raise EdgeDeeplabError(f"{shown(dest)} already exists; pass --force to replace it")
    return check_can_create(dest)


@contextlib.contextmanager
def atomic_file(dest: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success it is renamed onto ``dest``."""
    dest = check_writable(dest, overwrite)
    tmp: Path | None = None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        _honour_umask(tmp, directory=False)
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except OSError as exc:
        if not _concerns(exc, dest, tmp):
            raise
        raise path_error(exc, dest, "write") from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def atomic_write_bytes(dest: str | os.PathLike, data: bytes, overwrite: bool = True) -> Path:
    """Write ``data`` to ``dest`` atomically."""
    with atomic_file(dest, overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def atomic_write_text(dest: str | os.PathLike, text: str, overwrite: bool = True) -> Path:
    """Write ``text`` (UTF-8) to ``dest`` atomically."""
    return atomic_write_bytes(dest, text.encode("utf-8"), overwrite)


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``dest``; on success it replaces ``dest``.

    On failure the temporary directory is removed and an existing ``dest`` is untouched. When
    replacing, the old directory is moved aside first and deleted only after the new one is in
    place, so there is no moment at which neither exists on disk under some name.
    """
    dest = check_writable(dest, overwrite)
    tmp: Path | None = None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
        _honour_umask(tmp, directory=True)
        yield tmp
        old = None
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
            os.replace(dest, old / dest.name)
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except DiskFullError as exc:  # from an atomic write inside this folder: name the folder
        raise no_room_error(exc, dest) from None
    except OSError as exc:
        if not _concerns(exc, dest, tmp):
            raise
        raise path_error(exc, dest, "write") from None
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def missing_folders(folder: str | os.PathLike) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first: what creating it makes."""
    missing = []
    for candidate in (Path(folder), *Path(folder).parents):
        if os.path.lexists(candidate):
            break
        missing.append(candidate)
    return missing


def remove_empty(folders: list[Path]) -> None:
    """Remove each of ``folders`` (deepest first) while it is empty: what a failed run made and left unused."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return  # not empty, or not there: its parents are not empty either


def new_numbered_dir(parent: str | os.PathLike) -> Path:
    """Create and return ``parent/NNN``, one past the highest number there (001, 002, ...).

    Each run gets a folder of its own that nothing existed in, so results are never overwritten;
    ``mkdir`` without ``exist_ok`` claims the number even against a run started at the same time.
    """
    parent = Path(parent)
    check_can_create(parent / "001")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        # Only ASCII digits: a folder named '²' or '٣' passes str.isdigit() but is no run number.
        number = max((int(p.name) for p in parent.iterdir() if re.fullmatch(r"[0-9]+", p.name)), default=0) + 1
        while True:
            path = parent / f"{number:03d}"
            try:
                path.mkdir()
                return path
            except FileExistsError:
                number += 1
    except OSError as exc:
        raise path_error(exc, parent, "make a numbered folder in") from None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (model files can be hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
