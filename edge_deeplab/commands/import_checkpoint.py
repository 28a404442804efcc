"""``edge-deeplab import-checkpoint``: turn a VainF/DeepLabV3Plus-Pytorch checkpoint into ours.

The conversion and its key mapping live in :mod:`edge_deeplab.weights`; this command names the
result's classes, writes it atomically and says what it found, so a user can check the backbone,
class count and stride before exporting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edge_deeplab.commands.options import OutputStride, choices, stride, value
from edge_deeplab.weights import VAINF_BACKBONE
from runtime.files import check_writable
from runtime.outputs import output_lock, refuse_overlap

# The backbones VainF/DeepLabV3Plus-Pytorch ships that import (its 'mobilenet' is our mobilenetv2).
VainfBackbone = choices("VainfBackbone", tuple(VAINF_BACKBONE))
app = typer.Typer()


@app.command(help="Convert a DeepLabV3+ checkpoint of VainF/DeepLabV3Plus-Pytorch (a .pth holding 'model_state', e.g. "
                  "best_deeplabv3plus_mobilenet_voc_os16.pth; mobilenet, resnet50 or resnet101 backbone) into an "
                  "edge-deeplab checkpoint for evaluate, export and report. Every tensor is mapped and loaded "
                  "strictly.")
def import_checkpoint(
    checkpoint: Annotated[Path, typer.Argument(help="the VainF .pth file", show_default=False)],
    out: Annotated[Path, typer.Option(help="edge-deeplab checkpoint to write (.pt)", show_default=False)],
    dataset: Annotated[Optional[str], typer.Option(
        help="whose class names to use: voc, cityscapes, a dataset directory, or a classes.yaml",
        show_default="voc for 21 classes, cityscapes for 19")] = None,
    backbone: Annotated[Optional[VainfBackbone], typer.Option(
        help="expected backbone; it is read from the weights, this only checks it", show_default=False)] = None,
    output_stride: Annotated[Optional[OutputStride], typer.Option(
        help="stride the model was trained at", show_default="the _osN in the file name, else 16")] = None,
    force: Annotated[bool, typer.Option("--force", help="replace --out if it exists")] = False,
) -> int:
    from edge_deeplab.checkpoint import save_checkpoint
    from edge_deeplab.weights import import_vainf

    refuse_overlap(out, [checkpoint, dataset])
    with output_lock(out):
        check_writable(out, force)
        ckpt = import_vainf(str(checkpoint), dataset, value(backbone), stride(output_stride))
        save_checkpoint(ckpt, out)
    config = ckpt.model_config
    reported = ckpt.metrics.get("reported_miou")
    print(
        f"imported {config.backbone} DeepLabv3+ (VainF head, 1 decoder conv), {ckpt.num_classes} classes "
        f"({ckpt.dataset or 'classes.yaml'}), output stride {config.output_stride}"
        + (f", mIoU {reported:.4f} as reported by its training run" if reported is not None else "")
    )
    print(f"wrote {out}")
    return 0
