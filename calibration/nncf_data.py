"""Feeding calibration inputs to NNCF (OpenVINO's post-training quantization).

NNCF takes an ``nncf.Dataset`` of arbitrary items plus a transform that turns an item into the
model's input; here the items are :class:`calibration.inputs.PreparedImage` (so an accuracy-control
validation function can also reach each item's mask and placement), and the transform picks the
prepared array. Import :func:`runtime.telemetry.disable_telemetry` before NNCF, as this module does.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from calibration.inputs import PreparedImage
from runtime.telemetry import disable_telemetry


def input_of(item: PreparedImage) -> np.ndarray:
    """The transform NNCF applies to each item: the prepared 1 x 3 x H x W array."""
    return item.array


def nncf_dataset(items: Sequence[PreparedImage]):
    """An ``nncf.Dataset`` over prepared images (imported lazily: NNCF is an optional extra)."""
    disable_telemetry()
    import nncf

    return nncf.Dataset(list(items), input_of)
