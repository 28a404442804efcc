"""Feeding calibration inputs to ONNX Runtime's calibrators.

ONNX Runtime pulls calibration data through a ``CalibrationDataReader`` (``get_next()`` returns a
feed dict or ``None`` when done). Inputs are prepared once (:mod:`calibration.inputs`) and the
reader just hands them out, so the same arrays feed every calibrator run and every target.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from onnxruntime.quantization import CalibrationDataReader


class ArrayReader(CalibrationDataReader):
    """Hands out prepared 1 x 3 x H x W arrays under the model's input name, once each.

    ``on_done(1)`` is called for each array once the calibrator is through with it (it asks for
    the next one only after running the model on the last), e.g. a progress bar's ``update``.
    """

    def __init__(self, input_name: str, arrays: Sequence[np.ndarray],
                 on_done: Callable[[int], object] | None = None) -> None:
        self.input_name = input_name
        self.arrays = list(arrays)
        self.on_done = on_done
        self._next = 0
        self._reported = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.on_done is not None and self._reported < self._next:
            self.on_done(self._next - self._reported)
            self._reported = self._next
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
        self._reported = 0
