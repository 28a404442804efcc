"""Shared test setup: no telemetry, and threads shared out between pytest-xdist's workers.

The suite runs on as many workers as the machine has cores (``-n auto`` in pyproject.toml): much
of it is single-threaded (CLI subprocesses starting Python, graph rewrites, OpenVINO and NNCF
setup), so two workers on two cores take 0.55 of the time one did. Each worker then gets its
share of the cores for torch and OpenMP, so the two never run four threads on two cores.
"""

from __future__ import annotations

import os

_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
os.environ.setdefault("OMP_NUM_THREADS", str(max(1, min(2, (os.cpu_count() or 2) // _WORKERS))))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does (edge_deeplab.openmp): cores are shared

from runtime.telemetry import disable_telemetry  # noqa: E402

disable_telemetry()
