"""What one export is asked to do (:class:`ExportRequest`) and the cheap checks run on it first.

Every check here takes milliseconds and runs before any export work, so a wrong target, precision,
size or missing dataset is one clear line instead of a failure minutes into calibration.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from calibration.ranges import DEFAULT_METHOD, METHODS
from calibration.selection import CalibrationSet
from exporters.onnx import MIN_OPSET, min_input_side
from runtime.errors import EdgeDeeplabError
from runtime.files import check_writable
from runtime.manifest import DEFAULT_PRECISION, OUTPUT_CHOICES, PRECISIONS, TARGET_PRECISIONS, TARGETS


@dataclass
class CalibrationInput:
    """The calibration images: a dataset and the representative subset chosen from it."""

    dataset: Sequence  # samples with .image, .mask, .name
    chosen: CalibrationSet
    spec: str  # the dataset as the user named it (for the manifest)
    method: str = DEFAULT_METHOD


@dataclass
class ValidationInput:
    """Labelled images for mIoU and the function computing mIoU (fraction) from predictions.

    ``checkpoint_miou``: the checkpoint's own mIoU on the same images, each at its native size
    (PyTorch, no resizing or padding), which the bundle's mIoU at its input size is held against.
    """

    dataset: Sequence
    indices: Sequence[int]
    spec: str
    miou: Callable[[Sequence[np.ndarray], Sequence[np.ndarray]], float]
    checkpoint_miou: float | None = None


@dataclass
class QatInput:
    """Quantization-aware fine-tuning (``--qat STEPS``): what it trains on, for how long, how fast.

    ``batches(steps)`` yields ``steps`` (images, masks) pairs of torch tensors: float32
    N x 3 x H x W normalized with the request's mean and std, and int64 N x H x W labels with the
    request's ``ignore_index`` where unlabelled. They come with the training augmentation of the
    checkpoint's recipe; the caller builds them, since the exporters import no ``edge_deeplab`` code.
    """

    batches: Callable[[int], Iterable[tuple[Any, Any]]]
    steps: int
    lr: float
    spec: str  # the training dataset as the user named it (for the manifest)
    batch_size: int
    crop: int


@dataclass
class ExportRequest:
    """Everything one export needs; ``model`` is an eval-mode torch module at the chosen stride."""

    model: Any
    target: str
    precision: str
    out: Path
    height: int
    width: int
    classes: list[str]
    palette: list[list[int]]
    mean: list[float]
    std: list[float]
    verify_samples: Sequence  # a few real images (samples with .image, .name)
    ignore_index: int = 255
    dynamic: bool = False
    uint8_input: bool = True  # the graph normalizes; the device feeds decoded bytes
    outputs: str = "mask"  # a key of runtime.manifest.OUTPUT_CHOICES
    opset: int = MIN_OPSET
    model_info: dict = field(default_factory=dict)
    source: dict = field(default_factory=dict)
    calibration: CalibrationInput | None = None
    validation: ValidationInput | None = None
    max_drop: float | None = None  # mIoU points (percent)
    qat: QatInput | None = None
    force: bool = False
    cache_dir: Path | None = None
    log: Callable[[str], None] = field(default=lambda message: print(message, file=sys.stderr, flush=True))
    progress: bool = True  # bars for the steps that loop over images (on stderr, only on a terminal)


def check_target(target: str, precision: str | None) -> str:
    """Validate a target/precision pair (before any slow work); returns the precision to use."""
    if target not in TARGETS:
        raise EdgeDeeplabError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    precision = precision or DEFAULT_PRECISION[target]
    if precision not in PRECISIONS:
        raise EdgeDeeplabError(f"unknown precision {precision!r}; choose {', '.join(PRECISIONS)}")
    if precision not in TARGET_PRECISIONS[target]:
        raise EdgeDeeplabError(
            f"target {target} has no {precision} precision; it offers {', '.join(TARGET_PRECISIONS[target])}"
        )
    return precision


def check_outputs(outputs: str) -> None:
    """An ``--outputs`` choice this exporter knows (before any slow work)."""
    if outputs not in OUTPUT_CHOICES:
        raise EdgeDeeplabError(f"unknown --outputs {outputs!r}; choose one of {', '.join(OUTPUT_CHOICES)}")


def check_request(req: ExportRequest) -> None:
    """The cheap checks, run before any export work."""
    check_target(req.target, req.precision)
    check_writable(req.out, req.force)
    if req.opset < MIN_OPSET:
        raise EdgeDeeplabError(f"--opset must be {MIN_OPSET} or later, got {req.opset}")
    check_outputs(req.outputs)
    _check_input_size(req)
    if not req.verify_samples:
        raise EdgeDeeplabError("no images to verify the export on; give --val-data or --calib-data")
    if req.precision == "int8":
        _check_calibration(req)
    if req.max_drop is not None:
        _check_max_drop(req)
    if req.qat is not None:
        _check_qat(req)


def _check_input_size(req: ExportRequest) -> None:
    stride = int(req.model_info.get("output_stride") or 32)
    side = min_input_side(stride)
    if req.height < side or req.width < side:
        raise EdgeDeeplabError(f"input size {req.height}x{req.width} is too small for output stride {stride}; "
                               f"use at least {side}x{side}")


def _check_calibration(req: ExportRequest) -> None:
    if req.calibration is None or not req.calibration.chosen.indices:
        raise EdgeDeeplabError(f"{req.target} int8 needs calibration images: give --calib-data")
    if req.calibration.method not in METHODS:
        raise EdgeDeeplabError(f"unknown --calib-method {req.calibration.method!r}; choose one of {', '.join(METHODS)}")
    if req.target == "openvino" and req.calibration.method != DEFAULT_METHOD:
        raise EdgeDeeplabError("openvino int8 uses NNCF's own range estimation; --calib-method applies to "
                               "the onnxruntime and tensorrt targets")


def _check_max_drop(req: ExportRequest) -> None:
    if req.precision != "int8":
        raise EdgeDeeplabError("--max-drop applies to int8 exports only")
    if req.max_drop < 0:
        raise EdgeDeeplabError(f"--max-drop must be >= 0 mIoU points, got {req.max_drop}")
    if req.validation is None or not req.validation.indices:
        raise EdgeDeeplabError("--max-drop needs labelled validation images: give --val-data")


def _check_qat(req: ExportRequest) -> None:
    if req.precision != "int8":
        raise EdgeDeeplabError(f"--qat fine-tunes for INT8; {req.target} {req.precision} is not quantized (use --precision int8)")
    if req.qat.steps < 1:
        raise EdgeDeeplabError(f"--qat must be at least 1 step, got {req.qat.steps}")
    if not req.qat.lr > 0:
        raise EdgeDeeplabError(f"--qat-lr must be positive, got {req.qat.lr}")
