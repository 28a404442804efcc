"""``edge-deeplab export``'s options -> a checked :class:`exporters.request.ExportRequest`, and the
export run from it.

Everything that can be wrong with the request (target/precision pair, output folder, checkpoint,
datasets, class lists) is checked first, in seconds, before the model is built and before the slow
export and calibration. Torch-free at import: torch comes in with the model, at export time.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from edge_deeplab.export import (check_classes, check_input_size_limit, checkpoint_miou, default_input_size,
                                 model_record, open_calibration, open_if_readable, sample_images, source_record)
from runtime.errors import EdgeDeeplabError

if TYPE_CHECKING:
    from edge_deeplab.checkpoint import Checkpoint
    from exporters.request import CalibrationInput, ExportRequest, QatInput, ValidationInput

VERIFY_IMAGES = 4  # images the export is verified against PyTorch on
# --qat's learning rate (Adam, decaying to zero): on the default model 1e-4 gained most in 60
# steps of the rates tried (1e-5, 1e-4, 1e-3; exporters.fine_tune says why Adam).
DEFAULT_QAT_LR = 1e-4


@dataclass(frozen=True)
class ExportArgs:
    """The command's options, as given (checked by :func:`build_request`)."""

    checkpoint: Path
    target: str
    precision: str | None
    output_stride: int | None
    input_size: tuple[int, int] | None
    dynamic: bool
    outputs: str
    float_input: bool
    calib_data: str | None
    calib_images: int
    calib_method: str
    calib_seed: int
    val_data: str | None
    val_images: int
    max_drop: float | None
    qat: int | None
    qat_lr: float | None
    data: str | None
    opset: int
    out: Path
    force: bool
    cache_dir: Path | None


def export_checkpoint(args: ExportArgs) -> Path:
    """Check the request, build the model at its stride, score the checkpoint, export the bundle."""
    from exporters.bundle import export_bundle

    req, ckpt, output_stride = build_request(args)
    req.log(f"building {ckpt.model_config.backbone} at output stride {output_stride} from {args.checkpoint}")
    req.model = ckpt.build_model(output_stride)
    if req.validation is not None:
        req.validation.checkpoint_miou = checkpoint_miou(req.model, req.validation)
    return export_bundle(req)


def build_request(args: ExportArgs) -> tuple[ExportRequest, Checkpoint, int]:
    """Validate the arguments and assemble the export request (no slow work); returns it with the
    loaded checkpoint and the output stride to build the model at (the request's model is None)."""
    from edge_deeplab.checkpoint import load_checkpoint
    from exporters.request import ExportRequest, check_request, check_target
    from runtime.files import check_writable

    # --outputs, --calib-images and --val-images are checked by their options (choices, min=1), and the
    # outputs once more by check_request with everything else about the request.
    precision = check_target(args.target, args.precision)
    _check_qat_options(args, precision)
    if args.input_size:
        check_input_size_limit(*args.input_size)
    check_writable(args.out, args.force)
    ckpt = load_checkpoint(args.checkpoint)
    calib_spec, calib_dataset = _calibration_dataset(args, ckpt, precision)
    calibration = None
    if calib_dataset is not None and precision == "int8":
        calibration = _calibration_input(args, ckpt, calib_spec, calib_dataset)
    validation, verify_source = _validation(args, ckpt, calib_dataset)
    verify_samples = [verify_source[i] for i in range(min(VERIFY_IMAGES, len(verify_source)))]
    stride = args.output_stride or ckpt.model_config.output_stride
    height, width = _input_size(args, ckpt, validation)
    req = ExportRequest(
        model=None, target=args.target, precision=precision, out=args.out, height=height, width=width,
        classes=list(ckpt.classes), palette=[list(c) for c in ckpt.palette], mean=list(ckpt.mean),
        std=list(ckpt.std), verify_samples=verify_samples, ignore_index=ckpt.ignore_index, dynamic=args.dynamic,
        uint8_input=not args.float_input, outputs=args.outputs, opset=args.opset,
        model_info=model_record(ckpt.model_config, stride), source=source_record(args.checkpoint, ckpt),
        calibration=calibration, validation=validation, max_drop=args.max_drop, force=args.force,
        cache_dir=args.cache_dir, qat=qat_input(ckpt, args.qat, args.qat_lr, args.data),
    )
    check_request(req)
    return req, ckpt, stride


def _check_qat_options(args: ExportArgs, precision: str) -> None:
    """--qat's options fit together (before any work)."""
    if args.qat is None:
        if args.data is not None or args.qat_lr is not None:
            raise EdgeDeeplabError(f"{'--data' if args.data is not None else '--qat-lr'} goes with --qat STEPS")
        return
    if precision != "int8":
        raise EdgeDeeplabError(f"--qat fine-tunes for INT8; {args.target} {precision} is not quantized "
                               "(use --precision int8)")


def qat_input(ckpt: Checkpoint, steps: int | None, lr: float | None, data: str | None) -> QatInput | None:
    """What ``--qat STEPS`` trains on (None without it): the checkpoint's training data (or
    ``data``) with its recipe's augmentation, crop and batch size (the training defaults for a
    checkpoint without a recipe), at ``lr`` (default :data:`DEFAULT_QAT_LR`).

    The batches load in this process, never in forked DataLoader workers: an export process has
    OpenVINO's or ONNX Runtime's thread pools running, and a fork taken beside them crashed the
    process later (a segfault when the report then measured OpenVINO bundles, and a test session
    that died silently). A QAT step computes for about a second; loading a batch takes a small
    part of that."""
    from edge_deeplab.config import TrainConfig
    from edge_deeplab.data.base import open_dataset
    from exporters.request import QatInput

    if steps is None:
        return None
    spec = data or ckpt.dataset
    if not spec:
        raise EdgeDeeplabError("--qat needs training data and the checkpoint records no dataset; give --data")
    try:
        dataset = open_dataset(spec, "train")
    except EdgeDeeplabError as exc:
        if data:
            raise
        raise EdgeDeeplabError(f"--qat trains on the checkpoint's dataset {spec}, which is not readable here "
                               f"({exc}); give --data") from None
    check_classes(dataset, spec, ckpt.classes)
    recipe = (ckpt.train_state or {}).get("config") or {}
    defaults = TrainConfig()
    config = TrainConfig(crop_size=int(recipe.get("crop_size", defaults.crop_size)),
                         batch_size=int(recipe.get("batch_size", defaults.batch_size)),
                         workers=0,
                         seed=int(recipe.get("seed", 0)))
    if len(dataset) < config.batch_size:
        raise EdgeDeeplabError(f"--qat's training data {spec} has {len(dataset)} images, fewer than one batch "
                               f"({config.batch_size})")

    def batches(steps: int):
        import torch

        from edge_deeplab.train import DistInfo, make_loader

        return make_loader(config, dataset, 0, steps, DistInfo(), torch.device("cpu"))

    return QatInput(batches, steps, lr or DEFAULT_QAT_LR, spec, config.batch_size, config.crop_size)


def _calibration_dataset(args: ExportArgs, ckpt: Checkpoint, precision: str) -> tuple[str | None, Sequence | None]:
    """The calibration dataset's spec and the dataset (None when there is none), its classes checked.

    INT8 calibrates on the training data the checkpoint records unless told otherwise; other
    precisions open only a dataset the user names (which can then stand in for verification images).
    """
    calib_spec = args.calib_data or (ckpt.dataset if precision == "int8" else None)
    if precision == "int8" and not calib_spec:
        raise EdgeDeeplabError(f"{args.target} int8 needs calibration images: give --calib-data")
    if not calib_spec:
        return calib_spec, None
    try:
        dataset = open_calibration(calib_spec)
    except EdgeDeeplabError as exc:
        if args.calib_data:
            raise
        raise EdgeDeeplabError(f"{args.target} int8 needs calibration images and the checkpoint's dataset "
                               f"{calib_spec} is not readable here ({exc}); give --calib-data (a folder of "
                               "representative images will do)") from None
    check_classes(dataset, calib_spec, ckpt.classes)
    return calib_spec, dataset


def _calibration_input(args: ExportArgs, ckpt: Checkpoint, spec: str, dataset: Sequence) -> CalibrationInput:
    """The representative calibration set chosen from ``dataset``."""
    from calibration.selection import select_calibration_set
    from exporters.request import CalibrationInput

    chosen = select_calibration_set(dataset, args.calib_images, len(ckpt.classes), ckpt.ignore_index,
                                    seed=args.calib_seed)
    return CalibrationInput(dataset, chosen, spec, args.calib_method)


def _validation(args: ExportArgs, ckpt: Checkpoint,
                calib_dataset: Sequence | None) -> tuple[ValidationInput | None, Sequence]:
    """The labelled validation images (None when none are readable) and the dataset to verify on.

    The bundle is scored on the checkpoint's own dataset unless told otherwise; a checkpoint whose
    dataset is not on this machine (an imported one, say) is verified on calibration images, or on
    the built-in sample images when there are none.
    """
    from edge_deeplab.data.base import open_dataset
    from edge_deeplab.metrics import miou_function
    from exporters.request import ValidationInput

    val_spec = args.val_data or ckpt.dataset
    val_dataset = open_dataset(val_spec, "val") if args.val_data else open_if_readable(ckpt.dataset)
    if val_dataset is not None:
        if len(val_dataset) == 0:
            raise EdgeDeeplabError(f"validation dataset {val_spec} has no images")
        check_classes(val_dataset, val_spec, ckpt.classes)
        indices = list(range(min(args.val_images, len(val_dataset))))
        miou = miou_function(len(ckpt.classes), ckpt.ignore_index)
        return ValidationInput(val_dataset, indices, val_spec, miou), val_dataset
    # FP32 needs no calibration, and checking the bundle against PyTorch needs pictures, not labels.
    if calib_dataset is not None:
        verify_source, what = calib_dataset, f"image(s) of {args.calib_data or ckpt.dataset}"
    else:
        verify_source, what = sample_images(VERIFY_IMAGES), "built-in sample image(s) (--calib-data DIR: your own)"
    print(f"note: the checkpoint's dataset {ckpt.dataset or '(none recorded)'} is not readable here, so the "
          "bundle's mIoU is not measured (--val-data with a labelled copy measures it); the export is verified "
          f"against PyTorch on {min(VERIFY_IMAGES, len(verify_source))} {what}", file=sys.stderr)
    return None, verify_source


def _input_size(args: ExportArgs, ckpt: Checkpoint, validation: ValidationInput | None) -> tuple[int, int]:
    """The size given, else the default (said on stderr, and held to the size limit)."""
    if args.input_size:
        return args.input_size
    (height, width), why = default_input_size(ckpt, validation)
    check_input_size_limit(height, width)
    print(f"input size {height}x{width}: {why} (--input-size to change it)", file=sys.stderr)
    return height, width
