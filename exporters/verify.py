"""Checking an exported model against its reference, and scoring it on labelled images.

Every bundle is checked before it is written: an FP32 graph must reproduce PyTorch (max abs logit
difference, argmax agreement), an FP16/INT8 model must agree with the FP32 graph it came from, and
where a validation set is given, its mIoU is measured against the FP32 graph's. These numbers go
into the manifest so a user can see what "verified" meant.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from calibration.inputs import PreparedImage, logits_to_mask
from runtime.errors import EdgeDeeplabError

Runner = Callable[[np.ndarray], np.ndarray]  # 1 x 3 x H x W input -> 1 x C x H x W logits
# Minimum argmax agreement with the reference, per precision. FP32 must match PyTorch almost
# exactly (only float reassociation differs); FP16 loses ~3 decimal digits, near class boundaries
# only; INT8 is judged by mIoU (the accuracy guard), the floor here only catches a broken graph
# (wrong normalization, a mangled layer), which agrees with its reference on far fewer pixels.
MIN_AGREEMENT = {"fp32": 0.999, "fp16": 0.99, "int8": 0.80}


def ort_runner(model_path: str | Path, threads: int = 0) -> Runner:
    """Run an ONNX file on ONNX Runtime's CPU provider (all graph optimizations on)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def run(array: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: array})[0].astype(np.float32, copy=False)

    return run


@dataclass
class Agreement:
    """How closely a model's logits follow a reference's on the same inputs."""

    images: int
    max_abs_diff: float
    argmax_agreement: float

    def as_dict(self) -> dict:
        return {"images": self.images, "max_abs_diff": self.max_abs_diff, "argmax_agreement": self.argmax_agreement}


def compare(reference: Sequence[np.ndarray], test: Sequence[np.ndarray]) -> Agreement:
    """Max abs logit difference and the fraction of pixels whose argmax class is the same."""
    if len(reference) != len(test) or not reference:
        raise ValueError("compare() needs the same, non-zero number of reference and test outputs")
    max_diff, same, total = 0.0, 0, 0
    for ref, out in zip(reference, test):
        if ref.shape != out.shape:
            raise EdgeDeeplabError(f"exported model returns logits of shape {out.shape}, expected {ref.shape}")
        max_diff = max(max_diff, float(np.max(np.abs(ref.astype(np.float32) - out.astype(np.float32)))))
        same += int(np.count_nonzero(ref.argmax(axis=1) == out.argmax(axis=1)))
        total += ref.shape[0] * ref.shape[2] * ref.shape[3]
    return Agreement(len(reference), max_diff, same / total)


def require_agreement(agreement: Agreement, precision: str, what: str) -> None:
    """Fail the export (nothing is written) when a model disagrees with its reference."""
    floor = MIN_AGREEMENT[precision]
    if not np.isfinite(agreement.max_abs_diff) or agreement.argmax_agreement < floor:
        raise EdgeDeeplabError(
            f"{what} disagrees with its reference: argmax agreement {agreement.argmax_agreement:.4f} "
            f"< {floor} (max abs logit difference {agreement.max_abs_diff:.3g}); the bundle was not written"
        )


@dataclass
class Validation:
    """Labelled images and the mIoU function that scores predictions against their masks.

    ``miou`` comes from the caller (``edge_deeplab.metrics``; exporters do not import
    ``edge_deeplab``) and returns mIoU as a fraction in [0, 1]. Drops are reported in mIoU *points*
    (percent), so 0.5 points = 0.005 of that fraction.
    """

    items: list[PreparedImage]
    miou: Callable[[Sequence[np.ndarray], Sequence[np.ndarray]], float]

    def predictions(self, run: Runner) -> list[np.ndarray]:
        return [logits_to_mask(run(item.array), item.placement) for item in self.items]

    def score(self, run: Runner) -> float:
        """mIoU in [0, 1] of a model on these images (masks at the original image size)."""
        return float(self.miou(self.predictions(run), [item.mask for item in self.items]))


def points(fraction: float) -> float:
    """mIoU fraction -> points (percent), the unit of ``--max-drop``."""
    return 100.0 * fraction
