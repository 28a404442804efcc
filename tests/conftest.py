"""Shared test setup: no telemetry, few threads (the CI machine has two cores)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

from runtime.telemetry import disable_telemetry  # noqa: E402

disable_telemetry()
