"""Progress bars: one rule for every long step of every command.

A bar goes to stderr, because stdout holds a command's results (the report's table, a summary a
script parses), and it is drawn only when stderr is a terminal: a log file or a test's captured
output gets the step lines, not a bar's carriage-return redraws. ``enabled=False`` (``--no-progress``,
or a caller that draws its own bar) turns it off. tqdm is imported on first use, so ``import runtime``
stays light.
"""

from __future__ import annotations

import sys
from typing import Any, Iterable


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str | None = None,
                 unit: str = "it", initial: int = 0, leave: bool = True, enabled: bool = True) -> Any:
    """A tqdm bar on stderr following the rule above; iterate it, or ``update()`` it by hand."""
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=leave, file=sys.stderr,
                dynamic_ncols=True, disable=not (enabled and sys.stderr.isatty()))
