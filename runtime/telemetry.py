"""Keep ONNX Runtime, OpenVINO and NNCF from collecting usage telemetry.

Called once at CLI start-up (and by the test suite). It only sets environment switches the
libraries read when they load, so it is cheap and imports none of them.
"""

from __future__ import annotations

import os


def disable_telemetry() -> None:
    """Opt out of every toolchain's telemetry for this process and its children."""
    # NNCF skips its telemetry wrapper entirely when this is set.
    os.environ.setdefault("NNCF_CI", "1")
    # openvino-telemetry only sends when a consent file says yes and asks only on a terminal;
    # this variable is the documented opt-out of OpenVINO's tools.
    os.environ.setdefault("OPENVINO_TELEMETRY_DISABLE", "1")
