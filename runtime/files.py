"""Atomic file and directory writes, so that an interrupted run never leaves half a file.

Everything the project writes (checkpoints, bundles, reports, engine caches, masks) goes through
these helpers: the data is written next to its destination under a temporary name and renamed into
place, which is atomic on POSIX file systems. An existing destination is only replaced when the
caller says so (``overwrite=True``, the CLI's ``--force``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
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
    """Fail early, before any work, if ``dest`` exists and may not be replaced."""
    dest = Path(dest)
    if dest.exists() and not overwrite:
        raise EdgeDeeplabError(f"{dest} already exists; pass --force to replace it")
    return dest


@contextlib.contextmanager
def atomic_file(dest: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success it is renamed onto ``dest``."""
    dest = check_writable(dest, overwrite)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    _honour_umask(tmp, directory=False)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except OSError as exc:
        full = no_room_error(exc, dest)
        if full is None:
            raise
        raise full from None
    finally:
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
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    _honour_umask(tmp, directory=True)
    try:
        yield tmp
        old = None
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
            os.replace(dest, old / dest.name)
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except (OSError, DiskFullError) as exc:
        full = no_room_error(exc, dest)
        if full is None:
            raise
        raise full from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def new_numbered_dir(parent: str | os.PathLike) -> Path:
    """Create and return ``parent/NNN``, one past the highest number there (001, 002, ...).

    Each run gets a folder of its own that nothing existed in, so results are never overwritten;
    ``mkdir`` without ``exist_ok`` claims the number even against a run started at the same time.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    number = max((int(p.name) for p in parent.iterdir() if p.name.isdigit()), default=0) + 1
    while True:
        path = parent / f"{number:03d}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            number += 1


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (model files can be hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
