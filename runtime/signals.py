"""One rule for being asked to stop: Ctrl-C and SIGTERM both stop a run cleanly.

``docker stop``, ``systemctl stop``, ``timeout`` and a plain ``kill`` send SIGTERM, whose default
action ends the process on the spot: a training run loses the steps since its last checkpoint, an
export leaves its hidden temporary folder behind. Within :func:`stop_on_signals` SIGTERM does what
Ctrl-C does: it raises :class:`KeyboardInterrupt` in the main thread, so every ``finally`` runs
(temporary folders are removed, a video is finalized), training saves its checkpoint, and the
CLI ends with one line and exit status 130.

The first signal is remembered (:func:`stopped_by`), because typer turns a KeyboardInterrupt into
exit status 130 before the CLI sees the exception. While the run winds down, a second SIGTERM is
ignored (``docker stop`` and systemd may repeat it); a second Ctrl-C still interrupts, for the
user who insists. What a stopped run kept is said by :func:`note_kept` (training: the step
saved and how to resume), and the CLI adds it to its line.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator

_received: list[str] = []  # the signals received inside stop_on_signals, first first
_kept: list[str] = []  # what the stopped run kept, in the words of the code that kept it


def _name(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


def _handler(signum: int, frame: Any) -> None:
    first = not _received
    _received.append(_name(signum))
    if first or signum == signal.SIGINT:
        raise KeyboardInterrupt(_name(signum))


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise KeyboardInterrupt("Ctrl-C" / "SIGTERM").

    Only in the main thread (where Python runs signal handlers), and a signal the process was
    started with ignored (``nohup``, a background job without job control) stays ignored.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    _kept.clear()
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, _handler)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def leave_stop_to_parent(*_: Any) -> None:
    """In a worker process (a DataLoader's ``worker_init_fn``): ignore Ctrl-C and SIGTERM.

    Ctrl-C reaches the whole process group, and systemd and ``kill -- -PGID`` send SIGTERM to
    every process of the run; a worker that died of it makes torch raise "DataLoader worker is
    killed by signal" in the main process while that one is saving its checkpoint. The main
    process stops the workers itself once it has stopped.
    """
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def stopped_by() -> str | None:
    """"Ctrl-C" or the name of the first signal that stopped the run, None when none did."""
    return _received[0] if _received else None


def note_kept(message: str) -> None:
    """Say what a stopped run kept (a checkpoint, a partial video); the CLI's last line repeats it."""
    _kept.append(message)


def kept() -> str:
    """What the stopped run said it kept, joined; '' when it said nothing."""
    return "; ".join(_kept)
