"""The ranges numeric options may take, as click types: one definition checks a flag and a YAML value.

A value out of range must be refused where it is given, in one line, not minutes later from deep
inside numpy or torch (``--crop-size 1000000`` asking for 2.7 TiB, ``--workers -1`` a DataLoader
traceback). A click type on the option does that for a flag, and shows the range in ``--help``;
:func:`check` applies the same type to a value read from a configuration file. Floats must also be
finite: NaN passes every comparison, so a range alone lets ``--lr nan`` through.

Torch-free, like every option definition.
"""

from __future__ import annotations

import math
from typing import Any

import click

from runtime.errors import EdgeDeeplabError


class FiniteFloat(click.FloatRange):
    """A float within its range that is a number (not NaN, not infinite)."""

    name = "float range"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value} is not a finite number", param, ctx)
        return number


def at_least(low: int, high: int | None = None) -> click.IntRange:
    """Whole numbers from ``low`` (to ``high``, inclusive)."""
    return click.IntRange(min=low, max=high)


def positive() -> FiniteFloat:
    """Finite numbers above zero."""
    return FiniteFloat(min=0, min_open=True)


def check(name: str, value: Any, kind: click.ParamType) -> Any:
    """``value`` converted by ``kind``, or one line naming the option ``name`` and its range."""
    try:
        return kind.convert(value, None, None)
    except click.BadParameter as exc:
        raise EdgeDeeplabError(f"{name.replace('_', '-')}: {exc.message}") from None
