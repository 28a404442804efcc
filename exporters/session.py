"""One export's shared state, which every step reads and adds to.

The work directory, the input spec, the numbered step log, the images prepared once (validation and
calibration images are used by several steps: preparing them twice would double the slowest part),
the verified FP32 graph, and what the manifest will record (verification, calibration, extras).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calibration.inputs import InputSpecLite, PreparedImage, prepare_samples
from exporters.request import ExportRequest
from exporters.verify import Outputs, Runner, Validation
from runtime.progress import progress_bar


@dataclass
class Fp32Graph:
    """The exported FP32 ONNX, verified against PyTorch: the reference every other precision meets."""

    run: Runner
    items: list[PreparedImage]  # the verification images, prepared at the export size
    outputs: list[Outputs]  # the graph's outputs on them


class ExportSession:
    """One export's state: the work directory, prepared images, the FP32 reference."""

    fp32: Fp32Graph  # set by exporters.fp32.export_fp32, the first step

    def __init__(self, req: ExportRequest, work: Path, bundle: Path) -> None:
        self.req, self.work, self.bundle = req, work, bundle
        self.spec = InputSpecLite(req.height, req.width, "uint8" if req.uint8_input else "float32",
                                  tuple(req.mean), tuple(req.std))
        self.fp32_path = work / "model_fp32.onnx"
        self.step_no = 0
        self.calibration_info: dict | None = None
        self.verification: dict = {}
        self.extra: dict = {}
        self.int8_kernels: dict | None = None  # onnxruntime INT8 only (exporters.int8_kernels)

    def step(self, message: str) -> None:
        """Announce the next numbered step on the request's log."""
        self.step_no += 1
        self.req.log(f"[{self.step_no}] {message}")

    def score(self, run: Runner, what: str) -> float:
        """mIoU of ``run`` on the validation images, with a bar: a pass over them is the slow part
        of scoring a bundle and of every accuracy-guard step, and prints nothing until it ends."""
        validation = self.validation
        with progress_bar(total=len(validation.items), desc=what, unit="img", leave=False,
                          enabled=self.req.progress) as bar:
            def counted(array: np.ndarray) -> Outputs:
                outputs = run(array)
                bar.update(1)
                return outputs

            return validation.score(counted)

    @functools.cached_property
    def validation(self) -> Validation | None:
        """The validation images, prepared once however many steps score on them."""
        v = self.req.validation
        if v is None:
            return None
        return Validation(prepare_samples(v.dataset, v.indices, self.spec, "preparing validation images",
                                          self.req.progress), v.miou)

    @functools.cached_property
    def calib_items(self) -> list[PreparedImage]:
        """The calibration images, prepared once (the accuracy guard re-quantizes with them)."""
        c = self.req.calibration
        return prepare_samples(c.dataset, c.chosen.indices, self.spec, "preparing calibration images",
                               self.req.progress)
