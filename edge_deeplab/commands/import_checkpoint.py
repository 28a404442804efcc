"""``edge-deeplab import-checkpoint``: turn a VainF/DeepLabV3Plus-Pytorch checkpoint into ours.

The conversion and its key mapping live in :mod:`edge_deeplab.weights`; this command names the
result's classes, writes it atomically and says what it found, so a user can check the backbone,
class count and stride before exporting.
"""

from __future__ import annotations

import argparse

from runtime.files import check_writable


def add_parser(subparsers, name: str) -> None:
    p = subparsers.add_parser(
        name,
        help="convert a VainF/DeepLabV3Plus-Pytorch checkpoint into an edge-deeplab checkpoint",
        description="Convert a DeepLabV3+ checkpoint of VainF/DeepLabV3Plus-Pytorch (a .pth holding "
        "'model_state', e.g. best_deeplabv3plus_mobilenet_voc_os16.pth; mobilenet, resnet50 or "
        "resnet101 backbone) into an edge-deeplab checkpoint for evaluate, export and report. "
        "Every tensor is mapped and loaded strictly.",
    )
    p.add_argument("checkpoint", help="the VainF .pth file")
    p.add_argument("--out", required=True, help="edge-deeplab checkpoint to write (.pt)")
    p.add_argument(
        "--dataset",
        help="whose class names to use: voc, cityscapes, a dataset directory, or a classes.yaml "
        "(default: voc for 21 classes, cityscapes for 19)",
    )
    p.add_argument(
        "--backbone",
        choices=["mobilenetv2", "resnet50", "resnet101"],
        help="expected backbone; it is read from the weights, this only checks it",
    )
    p.add_argument(
        "--output-stride",
        type=int,
        choices=[8, 16, 32],
        help="stride the model was trained at (default: the _osN in the file name, else 16)",
    )
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge_deeplab.checkpoint import save_checkpoint
    from edge_deeplab.weights import import_vainf

    check_writable(args.out, args.force)
    ckpt = import_vainf(args.checkpoint, args.dataset, args.backbone, args.output_stride)
    save_checkpoint(ckpt, args.out)
    config = ckpt.model_config
    reported = ckpt.metrics.get("reported_miou")
    print(
        f"imported {config.backbone} DeepLabv3+ (VainF head, 1 decoder conv), {ckpt.num_classes} classes "
        f"({ckpt.dataset or 'classes.yaml'}), output stride {config.output_stride}"
        + (f", mIoU {reported:.4f} as reported by its training run" if reported is not None else "")
    )
    print(f"wrote {args.out}")
    return 0
