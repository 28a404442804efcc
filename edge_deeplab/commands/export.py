"""``edge-deeplab export``: checkpoint -> a verified bundle for one target and precision.

Everything that can be wrong with the request (target/precision pair, output folder, checkpoint,
datasets, class lists) is checked first, in seconds, before the slow export and calibration; the
work itself is :func:`exporters.bundle.export_bundle`.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from edge_deeplab.export import (check_classes, check_input_size_limit, checkpoint_miou, default_input_size,
                                 open_calibration, open_if_readable)
from runtime.errors import EdgeDeeplabError
from runtime.manifest import OUTPUT_CHOICES

TARGET_CHOICES = ("onnx", "onnxruntime", "openvino", "tensorrt")
VERIFY_IMAGES = 4


def parse_size(text: str) -> tuple[int, int]:
    """``513x513`` or ``513`` -> (height, width)."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"input size must be HxW or N (e.g. 513x513), got {text!r}")
    height = int(match.group(1))
    return height, int(match.group(2) or height)




def add_parser(subparsers, name: str) -> None:
    parser = subparsers.add_parser(
        name,
        help="export a checkpoint to an ONNX / ONNX Runtime INT8 / OpenVINO / TensorRT bundle",
        description="Export a checkpoint to a bundle (model files + model.json) for one target and precision, "
                    "verified against PyTorch on real images; INT8 is calibrated on a representative set.",
    )
    parser.add_argument("checkpoint", help="an edge-deeplab checkpoint (.pt)")
    # No argparse choices: a wrong target or precision gets the same one-line error as a wrong pair.
    parser.add_argument("--target", required=True, help=f"one of {', '.join(TARGET_CHOICES)}")
    parser.add_argument("--precision", help="fp32, fp16 or int8 (default: int8 for onnxruntime, fp32 otherwise)")
    parser.add_argument("--output-stride", type=int, choices=(8, 16, 32),
                        help="run the weights at this output stride (default: the checkpoint's)")
    parser.add_argument("--input-size", type=parse_size, metavar="HxW",
                        help="static input size, or the size a --dynamic model is verified and tuned at (default: "
                             "the size the checkpoint was evaluated at, so the bundle keeps its mIoU)")
    parser.add_argument("--dynamic", action="store_true", help="dynamic batch, height and width")
    parser.add_argument("--outputs", default="mask", metavar="|".join(OUTPUT_CHOICES),
                        help="what the graph returns: the class mask (ArgMax inside the graph, one byte per pixel; "
                             "default), the logits (for soft outputs), or both")
    parser.add_argument("--float-input", action="store_true",
                        help="take normalized float32 input (normalization on the host) instead of the default "
                             "uint8 RGB with the normalization inside the graph")
    parser.add_argument("--calib-data", help="calibration dataset (spec or folder; plain image folders work too; "
                        "default: the dataset the checkpoint was trained on)")
    parser.add_argument("--calib-images", type=int, default=200, help="calibration images (default 200)")
    parser.add_argument("--calib-method", choices=("minmax", "entropy", "percentile"), default="minmax")
    parser.add_argument("--calib-seed", type=int, default=0, help="seed of the calibration pick (default 0)")
    parser.add_argument("--val-data", help="labelled dataset (val split) the bundle is scored on against the "
                        "checkpoint (default: the checkpoint's dataset)")
    parser.add_argument("--val-images", type=int, default=50, help="validation images for mIoU (default 50)")
    parser.add_argument("--max-drop", type=float, metavar="POINTS",
                        help="INT8 accuracy guard: largest mIoU drop against FP32, in points (0.5 = half a percent)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (17 or later; default 17)")
    parser.add_argument("--out", required=True, help="bundle folder to write")
    parser.add_argument("--force", action="store_true", help="replace an existing bundle folder")
    parser.add_argument("--cache-dir", help="calibration range cache (default ~/.cache/edge-deeplab/calibration)")
    parser.set_defaults(func=run)


def build_request(args: argparse.Namespace):
    """Validate the arguments and assemble the export request (no slow work)."""
    from calibration.selection import select_calibration_set
    from edge_deeplab.checkpoint import load_checkpoint
    from edge_deeplab.data.base import open_dataset
    from edge_deeplab.metrics import miou_function
    from exporters.bundle import (CalibrationInput, ExportRequest, ValidationInput, check_outputs, check_request,
                                  check_target)
    from runtime.files import check_writable, sha256_file

    precision = check_target(args.target, args.precision)
    check_outputs(args.outputs)
    if args.input_size:
        check_input_size_limit(*args.input_size)
    check_writable(args.out, args.force)
    if args.calib_images < 1:
        raise EdgeDeeplabError(f"--calib-images must be at least 1, got {args.calib_images}")
    if args.val_images < 1:
        raise EdgeDeeplabError(f"--val-images must be at least 1, got {args.val_images}")
    ckpt = load_checkpoint(args.checkpoint)
    classes = list(ckpt.classes)
    # INT8 calibrates on the training data the checkpoint records unless told otherwise.
    calib_spec = args.calib_data or (ckpt.dataset if precision == "int8" else None)
    if precision == "int8" and not calib_spec:
        raise EdgeDeeplabError(f"{args.target} int8 needs calibration images: give --calib-data")

    calibration = None
    calib_dataset = None
    if calib_spec:
        calib_dataset = open_calibration(calib_spec)
        check_classes(calib_dataset, calib_spec, classes)
    if calib_dataset is not None and precision == "int8":
        chosen = select_calibration_set(calib_dataset, args.calib_images, len(classes), ckpt.ignore_index,
                                        seed=args.calib_seed)
        calibration = CalibrationInput(calib_dataset, chosen, calib_spec, args.calib_method)

    validation = None
    # The bundle is scored on the checkpoint's own dataset unless told otherwise; a checkpoint
    # whose dataset is not on this machine (an imported one, say) is verified on calibration images.
    val_spec = args.val_data or ckpt.dataset
    val_dataset = open_dataset(val_spec, "val") if args.val_data else open_if_readable(ckpt.dataset)
    if val_dataset is not None:
        if len(val_dataset) == 0:
            raise EdgeDeeplabError(f"validation dataset {val_spec} has no images")
        check_classes(val_dataset, val_spec, classes)
        indices = list(range(min(args.val_images, len(val_dataset))))
        validation = ValidationInput(val_dataset, indices, val_spec, miou_function(len(classes), ckpt.ignore_index))
        verify_source = val_dataset
    elif calib_dataset is not None:
        print(f"note: the checkpoint's dataset {ckpt.dataset or '(none recorded)'} is not readable here, so the "
              "bundle's mIoU is not measured; give --val-data to measure it", file=sys.stderr)
        verify_source = calib_dataset
    else:
        raise EdgeDeeplabError("no images to verify the export on: give --val-data (or --calib-data)")
    verify_samples = [verify_source[i] for i in range(min(VERIFY_IMAGES, len(verify_source)))]

    stride = args.output_stride or ckpt.model_config.output_stride
    config = ckpt.model_config
    (height, width), why = (args.input_size, "") if args.input_size else default_input_size(ckpt, validation)
    if not args.input_size:
        check_input_size_limit(height, width)
        print(f"input size {height}x{width}: {why} (--input-size to change it)", file=sys.stderr)
    req = ExportRequest(
        model=None,
        target=args.target,
        precision=precision,
        out=Path(args.out),
        height=height,
        width=width,
        classes=classes,
        palette=[list(c) for c in ckpt.palette],
        mean=list(ckpt.mean),
        std=list(ckpt.std),
        verify_samples=verify_samples,
        ignore_index=ckpt.ignore_index,
        dynamic=args.dynamic,
        uint8_input=not args.float_input,
        outputs=args.outputs,
        opset=args.opset,
        model_info={"backbone": config.backbone, "output_stride": stride, "decoder": config.decoder,
                    "separable": config.use_separable, "width_mult": config.width_mult,
                    "config": {**config.to_dict(), "output_stride": stride}},
        source={"checkpoint": str(Path(args.checkpoint).resolve()), "sha256": sha256_file(args.checkpoint),
                "dataset": ckpt.dataset, "metrics": ckpt.metrics},
        calibration=calibration,
        validation=validation,
        max_drop=args.max_drop,
        force=args.force,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
    )
    check_request(req)
    return req, ckpt, stride


def run(args: argparse.Namespace) -> int:
    from exporters.bundle import export_bundle

    req, ckpt, stride = build_request(args)
    req.log(f"building {ckpt.model_config.backbone} at output stride {stride} from {args.checkpoint}")
    req.model = ckpt.build_model(stride)
    if req.validation is not None:
        req.validation.checkpoint_miou = checkpoint_miou(req.model, req.validation)
    export_bundle(req)
    return 0
