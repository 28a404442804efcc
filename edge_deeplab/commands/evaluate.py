"""``edge-deeplab evaluate``: score a checkpoint (torch) or an exported bundle (runtime only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from edge_deeplab.commands.options import OutputStride, listed, parse_widths, stride
from edge_deeplab.evaluate import DEFAULT_BAND_WIDTHS
from runtime.errors import EdgeDeeplabError
from runtime.files import atomic_write_text, check_writable


app = typer.Typer()


@app.command(help="Score a checkpoint (.pt, needs torch) or an exported bundle directory (runs through the runtime, "
                  "no torch) on a dataset. Boundary mIoU counts only pixels within a trimap band of each width "
                  "around label boundaries (DeepLabv3+ paper, figure 5).")
def evaluate(
    model: Annotated[Path, typer.Argument(help="checkpoint file or bundle directory", show_default=False)],
    data: Annotated[Optional[str], typer.Option(
        help="labelled dataset with the model's classes",
        show_default="the dataset the checkpoint or bundle records, or 'synthetic'")] = None,
    split: Annotated[str, typer.Option(help="dataset split")] = "val",
    output_stride: Annotated[Optional[OutputStride], typer.Option(
        help="run a checkpoint at this output stride", show_default="the checkpoint's")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="score at most this many images",
                                                 show_default="all")] = None,
    band_widths: Annotated[str, typer.Option(help="trimap band widths in pixels, comma-separated")
                           ] = listed(DEFAULT_BAND_WIDTHS),
    device: Annotated[str, typer.Option(help="torch device for checkpoints: cpu, cuda or cuda:N")] = "cpu",
    json_path: Annotated[Optional[Path], typer.Option("--json", help="also write the figures to this JSON file")
                         ] = None,
    force: Annotated[bool, typer.Option("--force", help="replace an existing --json file")] = False,
) -> int:
    from edge_deeplab.data.base import open_scoring_data
    from edge_deeplab.evaluate import format_table, score_predictions
    from runtime.outputs import refuse_overlap

    widths = parse_widths(band_widths)
    if json_path:
        refuse_overlap(json_path, [model, data], "--json")
        check_writable(json_path, force)  # before the scoring, not after it
    path = model
    if path.is_dir():
        import runtime

        if output_stride is not None:
            raise EdgeDeeplabError("a bundle is exported at one output stride; --output-stride applies to checkpoints")
        segmenter = runtime.load(path)
        recorded = segmenter.manifest.source.get("dataset")
        classes, data_spec = segmenter.manifest.classes, data or recorded or "synthetic"
        predict = segmenter.predict
        info = {"bundle": str(path), "target": segmenter.manifest.target, "precision": segmenter.manifest.precision,
                "output_stride": segmenter.manifest.model.get("output_stride")}
    else:
        from edge_deeplab.checkpoint import load_checkpoint
        from edge_deeplab.devices import torch_device
        from edge_deeplab.evaluate import torch_predictor

        ckpt = load_checkpoint(path)
        where = torch_device(device)  # before the model is built
        net = ckpt.build_model(stride(output_stride)).to(where)
        recorded = ckpt.dataset
        classes, data_spec = ckpt.classes, data or ckpt.dataset or "synthetic"
        predict = torch_predictor(net)
        info = {"checkpoint": str(path), "output_stride": net.config.output_stride, "backbone": ckpt.model_config.backbone}
    dataset = open_scoring_data(data_spec, split, classes, recorded=data is None and bool(recorded))
    summary = score_predictions(predict, dataset, limit, widths)
    summary.update(info, data=data_spec, split=split)
    title = f"{path} on {data_spec}/{split}" + (f" at output stride {info['output_stride']}" if info.get("output_stride") else "")
    print(format_table(summary, title))
    if json_path:
        atomic_write_text(json_path, json.dumps(summary, indent=2, default=float) + "\n", overwrite=force)
        print(f"wrote {json_path}")
    return 0
