"""Checking an exported model against its reference, and scoring it on labelled images.

Every bundle is checked before it is written: an FP32 graph must reproduce PyTorch (the class
masks agree pixel for pixel, and the logits where the graph returns them), an FP16/INT8 model must
agree with the FP32 graph it came from, and its mIoU is measured on labelled images. These numbers
go into the manifest so a user can see what "verified" meant.

A model run here returns its graph outputs by name (``mask`` and/or ``logits``); a reference (the
PyTorch logits) may have more outputs than the bundle's graph, and is compared on what both have.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from calibration.inputs import PreparedImage
from runtime.errors import EdgeDeeplabError
from runtime.manifest import LOGITS, MASK
from runtime.postprocess import argmax_classes, restore_mask
from runtime.preprocess import Placement

Outputs = dict[str, np.ndarray]  # graph output name -> array for a batch of one
Runner = Callable[[np.ndarray], Outputs]  # 1 x 3 x H x W input -> the model's outputs
# Minimum argmax agreement with the reference, per precision. FP32 must match PyTorch almost
# exactly (only float reassociation differs); FP16 loses ~3 decimal digits, near class boundaries
# only; INT8 is judged by mIoU (the accuracy guard), the floor here only catches a broken graph
# (wrong normalization, a mangled layer), which agrees with its reference on far fewer pixels.
MIN_AGREEMENT = {"fp32": 0.999, "fp16": 0.99, "int8": 0.80}


def ort_runner(model_path: str | Path, threads: int = 0, exact: bool = False) -> Runner:
    """Run an ONNX file on ONNX Runtime's CPU provider: all graph optimizations on, or (``exact``)
    none, which runs a Q/DQ graph literally (dequantize, float op, quantize) instead of fused
    integer kernels."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if exact:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    names = [o.name for o in session.get_outputs()]

    def run(array: np.ndarray) -> Outputs:
        return dict(zip(names, session.run(names, {input_name: array})))

    return run


def mask_of(outputs: Outputs) -> np.ndarray:
    """N x H x W class indices: the graph's own mask, else the argmax of its logits (first class
    wins ties, as in the graph's ArgMax)."""
    if MASK in outputs:
        return np.asarray(outputs[MASK])
    return np.stack([argmax_classes(np.asarray(row)) for row in outputs[LOGITS]])


def outputs_to_mask(outputs: Outputs, placement: Placement) -> np.ndarray:
    """A batch-of-one model output -> the class mask at the original image size, as the runtime makes it."""
    return restore_mask(mask_of(outputs)[0], placement)


@dataclass
class Agreement:
    """How closely a model's outputs follow a reference's on the same inputs.

    ``argmax_agreement``: the fraction of pixels given the same class (the model's mask against
    the reference's argmax). ``max_abs_diff``: the largest logit difference, or None when the
    tested model returns no logits (a mask-only bundle).
    """

    images: int
    max_abs_diff: float | None
    argmax_agreement: float

    def as_dict(self) -> dict:
        return {"images": self.images, "max_abs_diff": self.max_abs_diff, "argmax_agreement": self.argmax_agreement}

    def describe(self) -> str:
        logits = "" if self.max_abs_diff is None else f"max |logit diff| {self.max_abs_diff:.3g}, "
        return f"{logits}mask agreement {self.argmax_agreement:.5f}"


def compare(reference: Sequence[Outputs], test: Sequence[Outputs]) -> Agreement:
    """Mask agreement, and the max abs logit difference where both sides have logits."""
    if len(reference) != len(test) or not reference:
        raise ValueError("compare() needs the same, non-zero number of reference and test outputs")
    max_diff: float | None = 0.0 if all(LOGITS in r and LOGITS in t for r, t in zip(reference, test)) else None
    same, total = 0, 0
    for ref, out in zip(reference, test):
        ref_mask, out_mask = mask_of(ref), mask_of(out)
        if ref_mask.shape != out_mask.shape:
            raise EdgeDeeplabError(f"exported model returns masks of shape {out_mask.shape}, expected {ref_mask.shape}")
        if max_diff is not None:
            if ref[LOGITS].shape != out[LOGITS].shape:
                raise EdgeDeeplabError(f"exported model returns logits of shape {out[LOGITS].shape}, "
                                       f"expected {ref[LOGITS].shape}")
            diff = np.abs(ref[LOGITS].astype(np.float32) - out[LOGITS].astype(np.float32))
            max_diff = max(max_diff, float(np.max(diff)))
        same += int(np.count_nonzero(ref_mask == out_mask))
        total += ref_mask.size
    return Agreement(len(reference), max_diff, same / total)


def require_agreement(agreement: Agreement, precision: str, what: str) -> None:
    """Fail the export (nothing is written) when a model disagrees with its reference."""
    floor = MIN_AGREEMENT[precision]
    finite = agreement.max_abs_diff is None or np.isfinite(agreement.max_abs_diff)
    if not finite or agreement.argmax_agreement < floor:
        raise EdgeDeeplabError(
            f"{what} disagrees with its reference: {agreement.describe()}, below the floor of {floor}; "
            "the bundle was not written"
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
        return [outputs_to_mask(run(item.array), item.placement) for item in self.items]

    def score(self, run: Runner) -> float:
        """mIoU in [0, 1] of a model on these images (masks at the original image size)."""
        return float(self.miou(self.predictions(run), [item.mask for item in self.items]))


def points(fraction: float) -> float:
    """mIoU fraction -> points (percent), the unit of ``--max-drop``."""
    return 100.0 * fraction
