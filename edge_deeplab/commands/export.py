"""``edge-deeplab export``: checkpoint -> a verified bundle for one target and precision.

Everything that can be wrong with the request (target/precision pair, output folder, checkpoint,
datasets, class lists) is checked first, in seconds, before the slow export and calibration; the
work itself is :func:`exporters.bundle.export_bundle`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from calibration.ranges import DEFAULT_METHOD
from edge_deeplab.commands.options import (CalibMethod, OutputStride, Outputs, Precision, Target, size_option,
                                           stride, value)
from edge_deeplab.export import (check_classes, check_input_size_limit, checkpoint_miou, default_input_size,
                                 open_calibration, open_if_readable, sample_images)
from edge_deeplab.ranges import FiniteFloat
from exporters.onnx import MAX_OPSET, MIN_OPSET
from runtime.errors import EdgeDeeplabError
from runtime.manifest import DEFAULT_PRECISION, MASK, TARGET_PRECISIONS

VERIFY_IMAGES = 4
app = typer.Typer()


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
    opset: int
    out: Path
    force: bool
    cache_dir: Path | None


@app.command(help="Export a checkpoint to a bundle (model files + model.json) for one target and precision, verified "
                  "against PyTorch on real images; INT8 is calibrated on a representative set.")
def export(
    checkpoint: Annotated[Path, typer.Argument(help="an edge-deeplab checkpoint (.pt)", show_default=False)],
    target: Annotated[Target, typer.Option(help="where the bundle runs", show_default=False)],
    out: Annotated[Path, typer.Option(help="bundle folder to write", show_default=False)],
    precision: Annotated[Optional[Precision], typer.Option(
        help="what the target offers: " + "; ".join(f"{t} {'/'.join(p)}" for t, p in TARGET_PRECISIONS.items()),
        show_default="the target's first: " + ", ".join(f"{t} {p}" for t, p in DEFAULT_PRECISION.items()))] = None,
    output_stride: Annotated[Optional[OutputStride], typer.Option(
        help="run the weights at this output stride", show_default="the checkpoint's")] = None,
    input_size: Annotated[Optional[str], typer.Option(  # (height, width) once parsed
        metavar="HxW", callback=size_option,
        help="static input size, or the size a --dynamic model is verified and tuned at",
        show_default="the size the checkpoint was evaluated at (an imported one: its dataset's usual size), so the "
                     "bundle keeps its mIoU; the export says which")] = None,
    dynamic: Annotated[bool, typer.Option("--dynamic", help="dynamic batch, height and width")] = False,
    outputs: Annotated[Outputs, typer.Option(
        help="what the graph returns: the class mask (ArgMax inside the graph, one byte per pixel), the logits "
             "(for soft outputs), or both")] = Outputs(MASK),
    float_input: Annotated[bool, typer.Option("--float-input",
        help="take normalized float32 input (normalization on the host) instead of uint8 RGB with the "
             "normalization inside the graph")] = False,
    calib_data: Annotated[Optional[str], typer.Option(
        help="calibration dataset (spec or folder; plain image folders work too); without a readable --val-data, "
             "also the images the export is verified on",
        show_default="the dataset the checkpoint was trained on")] = None,
    calib_images: Annotated[int, typer.Option(min=1, help="calibration images")] = 200,
    calib_method: Annotated[CalibMethod, typer.Option(help="range method for the onnxruntime/tensorrt INT8")
                            ] = CalibMethod(DEFAULT_METHOD),
    calib_seed: Annotated[int, typer.Option(help="seed of the calibration pick")] = 0,
    val_data: Annotated[Optional[str], typer.Option(
        help="labelled dataset (val split) the bundle is scored on against the checkpoint",
        show_default="the checkpoint's dataset")] = None,
    val_images: Annotated[int, typer.Option(min=1, help="validation images for mIoU")] = 50,
    max_drop: Annotated[Optional[float], typer.Option(
        metavar="POINTS", click_type=FiniteFloat(min=0), show_default="no guard",
        help="INT8 accuracy guard: largest mIoU drop against FP32, in points (0.5 = half a percent)")] = None,
    opset: Annotated[int, typer.Option(min=MIN_OPSET, max=MAX_OPSET, help="ONNX opset")] = MIN_OPSET,
    force: Annotated[bool, typer.Option("--force", help="replace an existing bundle folder")] = False,
    cache_dir: Annotated[Optional[Path], typer.Option(help="calibration range cache",
                                                      show_default="~/.cache/edge-deeplab/calibration")] = None,
) -> int:
    from exporters.bundle import export_bundle

    args = ExportArgs(checkpoint=checkpoint, target=target.value, precision=value(precision),
                      output_stride=stride(output_stride), input_size=input_size,
                      dynamic=dynamic, outputs=outputs.value, float_input=float_input, calib_data=calib_data,
                      calib_images=calib_images, calib_method=calib_method.value, calib_seed=calib_seed,
                      val_data=val_data, val_images=val_images, max_drop=max_drop, opset=opset, out=out, force=force,
                      cache_dir=cache_dir)
    from runtime.outputs import output_lock, refuse_overlap

    refuse_overlap(out, [checkpoint, calib_data, val_data])
    with output_lock(out):
        req, ckpt, output_stride_used = build_request(args)
        req.log(f"building {ckpt.model_config.backbone} at output stride {output_stride_used} from {checkpoint}")
        req.model = ckpt.build_model(output_stride_used)
        if req.validation is not None:
            req.validation.checkpoint_miou = checkpoint_miou(req.model, req.validation)
        export_bundle(req)
    return 0


def build_request(args: ExportArgs):
    """Validate the arguments and assemble the export request (no slow work)."""
    from calibration.selection import select_calibration_set
    from edge_deeplab.checkpoint import load_checkpoint
    from edge_deeplab.data.base import open_dataset
    from edge_deeplab.metrics import miou_function
    from exporters.bundle import CalibrationInput, ExportRequest, ValidationInput, check_request, check_target
    from runtime.files import check_writable, sha256_file

    # --outputs, --calib-images and --val-images are checked by their options (choices, min=1), and the
    # outputs once more by check_request with everything else about the request.
    precision = check_target(args.target, args.precision)
    if args.input_size:
        check_input_size_limit(*args.input_size)
    check_writable(args.out, args.force)
    ckpt = load_checkpoint(args.checkpoint)
    classes = list(ckpt.classes)
    # INT8 calibrates on the training data the checkpoint records unless told otherwise.
    calib_spec = args.calib_data or (ckpt.dataset if precision == "int8" else None)
    if precision == "int8" and not calib_spec:
        raise EdgeDeeplabError(f"{args.target} int8 needs calibration images: give --calib-data")

    calibration = None
    calib_dataset = None
    if calib_spec:
        try:
            calib_dataset = open_calibration(calib_spec)
        except EdgeDeeplabError as exc:
            if args.calib_data:
                raise
            raise EdgeDeeplabError(f"{args.target} int8 needs calibration images and the checkpoint's dataset "
                                   f"{calib_spec} is not readable here ({exc}); give --calib-data (a folder of "
                                   "representative images will do)") from None
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
    else:
        # FP32 needs no calibration, and checking the bundle against PyTorch needs pictures, not labels.
        if calib_dataset is not None:
            verify_source, what = calib_dataset, f"image(s) of {calib_spec}"
        else:
            verify_source, what = sample_images(VERIFY_IMAGES), "built-in sample image(s) (--calib-data DIR: your own)"
        print(f"note: the checkpoint's dataset {ckpt.dataset or '(none recorded)'} is not readable here, so the "
              "bundle's mIoU is not measured (--val-data with a labelled copy measures it); the export is verified "
              f"against PyTorch on {min(VERIFY_IMAGES, len(verify_source))} {what}", file=sys.stderr)
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
        out=args.out,
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
        cache_dir=args.cache_dir,
    )
    check_request(req)
    return req, ckpt, stride
