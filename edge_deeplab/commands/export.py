"""``edge-deeplab export``: checkpoint -> a verified bundle for one target and precision.

The options, parsed here; the request is checked and run by :mod:`edge_deeplab.export_request`
(everything that can be wrong is found in seconds, before the slow export and calibration), the
export itself is :func:`exporters.bundle.export_bundle`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from calibration.ranges import DEFAULT_METHOD
from edge_deeplab.commands.options import (CalibMethod, OutputStride, Outputs, Precision, Target, size_option,
                                           stride, value)
from edge_deeplab.export_request import DEFAULT_QAT_LR, ExportArgs, export_checkpoint
from edge_deeplab.ranges import FiniteFloat
from exporters.onnx import MAX_OPSET, MIN_OPSET
from runtime.manifest import DEFAULT_PRECISION, MASK, TARGET_PRECISIONS

app = typer.Typer()


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
    qat: Annotated[Optional[int], typer.Option(
        metavar="STEPS", min=1, show_default="none: post-training quantization only",
        help="quantization-aware fine-tuning: after calibration, train the INT8 model's weights for STEPS steps with "
             "the target's quantization in the forward pass (about 10 % of the model's training steps)")] = None,
    qat_lr: Annotated[Optional[float], typer.Option(
        click_type=FiniteFloat(min=0, min_open=True), show_default=f"{DEFAULT_QAT_LR:g}",
        help="--qat's learning rate (Adam, decaying to zero)")] = None,
    data: Annotated[Optional[str], typer.Option(
        help="--qat's training data (dataset spec, train split, the training augmentation)",
        show_default="the dataset the checkpoint was trained on")] = None,
    opset: Annotated[int, typer.Option(min=MIN_OPSET, max=MAX_OPSET, help="ONNX opset")] = MIN_OPSET,
    force: Annotated[bool, typer.Option("--force", help="replace an existing bundle folder")] = False,
    cache_dir: Annotated[Optional[Path], typer.Option(help="calibration range cache",
                                                      show_default="~/.cache/edge-deeplab/calibration")] = None,
) -> int:
    args = ExportArgs(checkpoint=checkpoint, target=target.value, precision=value(precision),
                      output_stride=stride(output_stride), input_size=input_size,
                      dynamic=dynamic, outputs=outputs.value, float_input=float_input, calib_data=calib_data,
                      calib_images=calib_images, calib_method=calib_method.value, calib_seed=calib_seed,
                      val_data=val_data, val_images=val_images, max_drop=max_drop, qat=qat, qat_lr=qat_lr, data=data,
                      opset=opset, out=out, force=force, cache_dir=cache_dir)
    from runtime.outputs import output_lock, refuse_overlap

    refuse_overlap(out, [checkpoint, calib_data, val_data, data])
    with output_lock(out):
        export_checkpoint(args)
    return 0
