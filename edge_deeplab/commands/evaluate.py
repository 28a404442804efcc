"""``edge-deeplab evaluate``: score a checkpoint (torch) or an exported bundle (runtime only)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from runtime.errors import EdgeDeeplabError
from runtime.files import atomic_write_text, check_writable


def add_parser(subparsers, name: str) -> None:
    p = subparsers.add_parser(
        name,
        help="score a checkpoint or a bundle: mIoU, per-class IoU, pixel accuracy, boundary mIoU",
        description="Score a checkpoint (.pt, needs torch) or an exported bundle directory (runs through "
        "the runtime, no torch) on a dataset. Boundary mIoU counts only pixels within a trimap band of "
        "each width around label boundaries (DeepLabv3+ paper, figure 5).",
    )
    p.add_argument("model", help="checkpoint file or bundle directory")
    p.add_argument("--data", default=None, help="dataset (default: the checkpoint's training dataset, or 'synthetic')")
    p.add_argument("--split", default="val", help="dataset split (default val)")
    p.add_argument("--output-stride", type=int, choices=[8, 16, 32], help="run a checkpoint at this output stride")
    p.add_argument("--limit", type=int, help="score at most this many images")
    p.add_argument("--band-widths", default="2,4,8,16", help="trimap band widths in pixels (default 2,4,8,16)")
    p.add_argument("--device", default="cpu", help="torch device for checkpoints (default cpu)")
    p.add_argument("--json", dest="json_path", help="also write the figures to this JSON file")
    p.add_argument("--force", action="store_true", help="replace an existing --json file")
    p.set_defaults(func=run)


def parse_widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.split(",") if w.strip())
    except ValueError:
        raise EdgeDeeplabError(f"--band-widths must be integers separated by commas, not {text!r}") from None
    if not widths or min(widths) <= 0:
        raise EdgeDeeplabError("--band-widths needs at least one positive width")
    return widths


def run(args: argparse.Namespace) -> int:
    from edge_deeplab.data.base import open_dataset
    from edge_deeplab.evaluate import format_table, score_predictions

    widths = parse_widths(args.band_widths)
    if args.json_path:
        check_writable(args.json_path, args.force)  # before the scoring, not after it
    path = Path(args.model)
    if path.is_dir():
        import runtime

        if args.output_stride is not None:
            raise EdgeDeeplabError("a bundle is exported at one output stride; --output-stride applies to checkpoints")
        segmenter = runtime.load(path)
        classes, data_spec = segmenter.manifest.classes, args.data or "synthetic"
        predict = segmenter.predict
        info = {"bundle": str(path), "target": segmenter.manifest.target, "precision": segmenter.manifest.precision,
                "output_stride": segmenter.manifest.model.get("output_stride")}
    else:
        import torch

        from edge_deeplab.checkpoint import load_checkpoint
        from edge_deeplab.evaluate import torch_predictor

        ckpt = load_checkpoint(path)
        model = ckpt.build_model(args.output_stride).to(torch.device(args.device))
        classes, data_spec = ckpt.classes, args.data or ckpt.dataset or "synthetic"
        predict = torch_predictor(model)
        info = {"checkpoint": str(path), "output_stride": model.config.output_stride, "backbone": ckpt.model_config.backbone}
    dataset = open_dataset(data_spec, args.split)
    if list(dataset.classes) != list(classes):
        raise EdgeDeeplabError(
            f"dataset {data_spec} has {len(dataset.classes)} classes {list(dataset.classes)[:4]}..., "
            f"the model was trained on {len(classes)} {list(classes)[:4]}..."
        )
    summary = score_predictions(predict, dataset, args.limit, widths)
    summary.update(info, data=data_spec, split=args.split)
    title = f"{path} on {data_spec}/{args.split}" + (f" at output stride {info['output_stride']}" if info.get("output_stride") else "")
    print(format_table(summary, title))
    if args.json_path:
        atomic_write_text(args.json_path, json.dumps(summary, indent=2, default=float) + "\n", overwrite=args.force)
        print(f"wrote {args.json_path}")
    return 0
