"""Feeding calibration inputs to ONNX Runtime's calibrators.

ONNX Runtime pulls calibration data through a ``CalibrationDataReader`` (``get_next()`` returns a
feed dict or ``None`` when done). Inputs are prepared once (:mod:`calibration.inputs`) and the
reader just hands them out, so the same arrays feed every calibrator run and every target.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from onnxruntime.quantization import CalibrationDataReader


class ArrayReader(CalibrationDataReader):
    """Hands out prepared 1 x 3 x H x W arrays under the model's input name, once each."""

    def __init__(self, input_name: str, arrays: Sequence[np.ndarray]) -> None:
        self.input_name = input_name
        self.arrays = list(arrays)
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self.arrays):
            return None
        array = self.arrays[self._next]
        self._next += 1
        return {self.input_name: array}

    def __len__(self) -> int:
        return len(self.arrays)

    def rewind(self) -> None:
        """Start again from the first array (a reader is otherwise exhausted after one pass)."""
        self._next = 0
