"""How torch's OpenMP threads wait between parallel regions: set before torch is imported.

torch runs its CPU kernels on OpenMP threads which, by default, keep spinning for a while after
each parallel region, waiting for the next one. On a machine whose cores other processes also want
(a 2-core laptop with a browser open, a shared CI runner), a spinning thread holds the core that
the thread it waits for needs. On a 2-core machine running other work, training steps took 1.2x
as long with the default as with ``OMP_WAIT_POLICY=PASSIVE`` at a load of 4-5
(``benchmarks/train_step.py --variant spin:OMP_WAIT_POLICY=default``) and up to 10x at a load of
8-12; the weights come out identical, so the command line asks for PASSIVE unless the user chose.
OpenMP reads the variable once, when torch loads it: a process that imported torch already keeps
what it had.
"""

from __future__ import annotations

import os

WAIT_POLICY = "OMP_WAIT_POLICY"


def prefer_passive_wait() -> None:
    """Make OpenMP threads sleep as soon as they wait, unless ``OMP_WAIT_POLICY`` is set."""
    os.environ.setdefault(WAIT_POLICY, "PASSIVE")
