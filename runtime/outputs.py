"""Two rules for every output a command writes: it never replaces an input, and it has one writer.

``--force`` means "replace my earlier output", never "destroy my input": ``infer SRC --out SRC
--force`` would otherwise delete the source images it is about to read, and ``import-checkpoint
a.pt --out a.pt --force`` the only copy of the weights. :func:`refuse_overlap` refuses an output
that is an input or holds one, in one line, before anything is read.

Two runs writing the same ``--out`` at once would each build their result beside it and rename it
into place, the second silently replacing the first. :func:`output_lock` lets one run at a time
write an output: an advisory ``flock`` on a hidden ``.NAME.lock`` file beside it, which the kernel
releases when the process ends however it ends, so a killed run never leaves the output stuck.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterable, Iterator

from runtime.errors import EdgeDeeplabError
from runtime.files import check_can_create, missing_folders, path_error, remove_empty, shown


def _real(path: str | os.PathLike) -> Path:
    """The absolute path with symbolic links resolved (as far as it exists)."""
    return Path(os.path.realpath(path))


def refuse_overlap(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None], flag: str = "--out") -> None:
    """Fail when writing ``out`` would replace or delete one of ``inputs`` (``--force`` or not).

    An input overlaps when it is ``out`` itself (through a symbolic or hard link too), lies inside
    the folder ``out``, or is a folder holding an ``out`` that exists (a bundle's own model.json, a
    dataset's images/). Inputs that do not exist on disk (``synthetic``, a camera index, a URL)
    cannot be lost and are skipped. A new file or folder inside an input folder replaces nothing.
    """
    target = _real(out)
    exists = os.path.lexists(target)
    for item in inputs:
        if item is None or not os.path.lexists(item):
            continue
        source = _real(item)
        same = source == target or (exists and os.path.samefile(source, target))
        what = "is" if same else "holds" if target in source.parents else "is inside" if (
            exists and source in target.parents) else ""
        if what:
            raise EdgeDeeplabError(f"{flag} {shown(out)} {what} the input {shown(item)}; write the output "
                                   f"elsewhere ({flag} never replaces an input, even with --force)")


def _lock_path(out: Path) -> Path:
    real = _real(out)
    return real.parent / f".{real.name}.lock" if real.name else real / ".edge-deeplab.lock"


@contextlib.contextmanager
def output_lock(out: str | os.PathLike) -> Iterator[None]:
    """Hold ``out`` for this process for the block; a second run asking for it meanwhile is refused.

    The lock file is removed on the way out while still locked, and a run that locked a file
    someone removed meanwhile tries again, so the name always points at the file that is held.
    Folders made on the way to the lock are removed again when the run left them empty.
    """
    import fcntl

    check_can_create(out)  # the lock sits beside the output: a path that cannot be written says why first
    path = _lock_path(Path(out))
    created = missing_folders(path.parent)
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise path_error(exc, out, "write") from None
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:
                raise path_error(exc, out, "write") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip()
                os.close(fd)
                raise EdgeDeeplabError(
                    f"another run{f' (process {holder})' if holder.isdigit() else ''} is writing {shown(out)}; "
                    "wait for it to finish, or write elsewhere") from None
            try:
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)  # the holder removed the file between our open and our lock: take the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        try:
            yield
        finally:
            path.unlink(missing_ok=True)
            os.close(fd)
    finally:
        remove_empty(created)
