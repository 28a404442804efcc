"""Shared test setup: no telemetry, few threads (the CI machine has two cores)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does (edge_deeplab.openmp): cores are shared

from runtime.telemetry import disable_telemetry  # noqa: E402

disable_telemetry()
