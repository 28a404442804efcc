"""``edge-deeplab report``: accuracy against latency for every output stride, target and precision.

From one or several checkpoints (compared in one table), every combination this machine can build
is exported (into ``<out>/bundles``) and measured; with ``--bundles DIR``, bundles exported elsewhere are measured as they are, without
torch (the way to report on a Jetson). The work is :mod:`edge_deeplab.report`; this module turns
flags into its settings, checking everything cheap before anything slow starts.
"""

from __future__ import annotations

import argparse
import sys
from importlib import util
from pathlib import Path
from typing import Any

from edge_deeplab.commands.evaluate import parse_widths
from edge_deeplab.commands.export import parse_size
from edge_deeplab.export import check_input_size_limit
from runtime.errors import EdgeDeeplabError
from runtime.manifest import PRECISIONS, TARGETS

# Defaults for a full report; the pipeline passes smaller ones so its demo finishes in minutes.
REPORT_DEFAULTS: dict[str, Any] = {"val_images": None, "calib_images": 100, "runs": 50, "warmup": 5}


def _csv(kind: type, choices: tuple | None = None):
    """An argparse type for comma-separated lists (``8,16,32``, ``onnx,openvino``)."""

    def parse(text: str) -> list:
        try:
            items = [kind(item.strip()) for item in text.split(",") if item.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}") from None
        bad = [item for item in items if choices is not None and item not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"{', '.join(map(str, bad)) or 'nothing'}: choose from {', '.join(map(str, choices or ()))}")
        return items

    return parse


def add_report_options(parser: argparse.ArgumentParser, defaults: dict[str, Any], targets_help: str,
                       data_help: str) -> None:
    """The options the report and the pipeline share (the pipeline with smaller defaults)."""
    images = defaults["val_images"]
    parser.add_argument("--data", help=data_help)
    parser.add_argument("--split", default="val", help="dataset split (default val)")
    parser.add_argument("--output-strides", type=_csv(int, (8, 16, 32)), default=[8, 16, 32], metavar="LIST",
                        help="output strides to export and compare (default 8,16,32)")
    parser.add_argument("--targets", type=_csv(str, TARGETS), default=None, metavar="LIST", help=targets_help)
    parser.add_argument("--precisions", type=_csv(str, PRECISIONS), default=list(PRECISIONS), metavar="LIST",
                        help="precisions (default fp32,fp16,int8; each target gets those it offers)")
    parser.add_argument("--input-size", type=parse_size, default=None, metavar="HxW",
                        help="static input size of the exported bundles (default: the scored images' size, the "
                             "largest height and width among them)")
    parser.add_argument("--val-images", "--limit", dest="val_images", type=int, default=images, metavar="N",
                        help=f"score at most N images (default {images or 'all of the split'})")
    parser.add_argument("--calib-data", help="INT8 calibration dataset, train split (default: --data)")
    parser.add_argument("--calib-images", type=int, default=defaults["calib_images"],
                        help=f"INT8 calibration images (default {defaults['calib_images']})")
    parser.add_argument("--calib-method", choices=("minmax", "entropy", "percentile"), default="minmax",
                        help="range method for the onnxruntime/tensorrt INT8 (default minmax)")
    parser.add_argument("--calib-seed", type=int, default=0, help="seed of the calibration pick (default 0)")
    parser.add_argument("--max-drop", type=float, metavar="POINTS",
                        help="INT8 accuracy guard on the scored images: largest mIoU drop against FP32, in points")
    parser.add_argument("--runs", type=int, default=defaults["runs"],
                        help=f"timed runs per bundle (default {defaults['runs']})")
    parser.add_argument("--warmup", type=int, default=defaults["warmup"],
                        help=f"untimed runs per bundle first (default {defaults['warmup']})")
    parser.add_argument("--threads", type=int, default=0, help="runtime intra-op threads (default 0: backend's choice)")
    parser.add_argument("--band-widths", default="2,4,8,16",
                        help="trimap band widths for boundary mIoU, pixels (default 2,4,8,16)")
    parser.add_argument("--band-width", type=int, default=4,
                        help="the band width shown in the main table (default 4; must be one of --band-widths)")
    parser.add_argument("--keep-bundles", action=argparse.BooleanOptionalAction, default=True,
                        help="keep the exported bundles in <out>/bundles (default yes)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the exporters' messages as they come")


def add_parser(subparsers, name: str) -> None:
    parser = subparsers.add_parser(
        name,
        help="accuracy-versus-latency report over output strides, targets and precisions",
        description="Export a checkpoint at every output stride, target and precision this machine can build, "
                    "score each bundle through the runtime (mIoU, per-class IoU, boundary mIoU, pixel accuracy), "
                    "time them all interleaved, and write report.md, report.csv, report.json and plots. "
                    "With --bundles, measure bundles already exported (no torch needed: for the device).",
    )
    parser.add_argument("checkpoints", nargs="*", metavar="CHECKPOINT",
                        help="edge-deeplab checkpoints (.pt), several to compare them in one table (same classes); "
                             "or give --bundles")
    parser.add_argument("--bundles", type=Path, metavar="DIR",
                        help="measure the bundles in DIR (every subfolder with a model.json) instead of exporting")
    parser.add_argument("--out", type=Path,
                        help="report folder (default reports/<checkpoint name>, reports/compare-<names> for several, "
                             "or reports/<DIR name>)")
    parser.add_argument("--force", action="store_true", help="replace an existing report folder")
    add_report_options(parser, REPORT_DEFAULTS,
                       "targets (default all: onnx,onnxruntime,openvino,tensorrt; one this machine cannot run "
                       "is listed as not measured, with the reason)",
                       "labelled dataset to score on (default: the checkpoint's training dataset, or 'synthetic')")
    parser.set_defaults(func=run)


def check_numbers(args: argparse.Namespace) -> tuple[tuple[int, ...], int]:
    """The numeric options, checked before any slow work; returns (band widths, headline width)."""
    widths = parse_widths(args.band_widths)
    if args.band_width not in widths:
        raise EdgeDeeplabError(f"--band-width {args.band_width} is not one of --band-widths {args.band_widths}")
    if args.runs < 1 or args.warmup < 0:
        raise EdgeDeeplabError("--runs must be >= 1 and --warmup >= 0")
    if args.val_images is not None and args.val_images < 1:
        raise EdgeDeeplabError(f"--val-images must be at least 1, got {args.val_images}")
    if args.calib_images < 1:
        raise EdgeDeeplabError(f"--calib-images must be at least 1, got {args.calib_images}")
    if args.threads < 0:
        raise EdgeDeeplabError("--threads must be >= 0")
    if args.max_drop is not None and args.max_drop < 0:
        raise EdgeDeeplabError(f"--max-drop must be >= 0 mIoU points, got {args.max_drop}")
    if args.input_size is not None:
        check_input_size(args.input_size, max(args.output_strides))
        check_input_size_limit(*args.input_size)
    return widths, args.band_width


def check_input_size(size: tuple[int, int], output_stride: int) -> None:
    """One line when a size is below what the largest output stride asked for can run at."""
    from exporters.onnx import min_input_side

    side = min_input_side(output_stride)
    if min(size) < side:
        raise EdgeDeeplabError(f"input size {size[0]}x{size[1]} is too small for output stride {output_stride}; "
                               f"use at least {side}x{side}")


def _open_samples(spec: str, split: str, classes: list[str], limit: int | None):
    from edge_deeplab.data.base import open_dataset
    from edge_deeplab.report import SampleList

    dataset = open_dataset(spec, split)
    if list(dataset.classes) != list(classes):
        raise EdgeDeeplabError(
            f"dataset {spec} has {len(dataset.classes)} classes ({', '.join(list(dataset.classes)[:4])}...), the "
            f"model {len(classes)} ({', '.join(list(classes)[:4])}...)")
    return SampleList(dataset, limit)


def report_checkpoint(args: argparse.Namespace, checkpoints: list[Path], out: Path):
    """The checkpoint path of ``report`` (also the pipeline's last step); returns the Report."""
    from edge_deeplab.report import (ExportSettings, Measurement, TimingSettings, model_labels, plan_combinations,
                                     report_from_checkpoint)
    from runtime.files import check_writable

    widths, headline = check_numbers(args)
    combos = plan_combinations(args.output_strides, args.targets or list(TARGETS), args.precisions)
    check_writable(out, args.force)
    missing = [name for name in ("torch", "onnx") if util.find_spec(name) is None]
    if missing:
        raise EdgeDeeplabError(
            f"exporting a checkpoint needs {' and '.join(missing)} (pip install 'edge-deeplab[export]'); "
            "on a device, report on bundles exported elsewhere with --bundles DIR")
    from edge_deeplab.checkpoint import load_checkpoint

    ckpts = [load_checkpoint(path) for path in checkpoints]
    ckpt = ckpts[0]
    for other in ckpts[1:]:
        if list(other.classes) != list(ckpt.classes):
            raise EdgeDeeplabError(
                f"{other.path} predicts other classes than {ckpt.path} ({len(other.classes)}: "
                f"{', '.join(other.classes[:4])}... against {len(ckpt.classes)}: {', '.join(ckpt.classes[:4])}...); "
                "one report compares checkpoints of the same classes")
    data = args.data or ckpt.dataset or "synthetic"
    samples = _open_samples(data, args.split, ckpt.classes, args.val_images)
    height, width = args.input_size or samples.largest_size()
    check_input_size((height, width), max(args.output_strides))
    measurement = Measurement(samples, data, args.split, widths, headline,
                              TimingSettings(args.runs, args.warmup, args.threads), args.verbose)
    export = ExportSettings(height, width, args.calib_data or data, args.calib_images, args.calib_method,
                            args.calib_seed, args.max_drop)
    labels = model_labels(ckpts) if len(ckpts) > 1 else [""]
    what = ", ".join(f"{path} ({label})" if label else str(path) for path, label in zip(checkpoints, labels))
    print(f"report on {len(combos)} combinations of {what} at {height}x{width}, "
          f"{len(samples)} images of {data}/{args.split}", file=sys.stderr)
    return report_from_checkpoint(list(zip(labels, ckpts)), combos, measurement, export, out, args.force,
                                  args.keep_bundles)


def report_bundles(args: argparse.Namespace, folder: Path, out: Path):
    """The ``--bundles`` path: torch-free from end to end."""
    from edge_deeplab.report import Measurement, TimingSettings, find_bundles, report_from_bundles
    from runtime.files import check_writable
    from runtime.manifest import read_manifest

    widths, headline = check_numbers(args)
    if args.input_size is not None:
        raise EdgeDeeplabError("--input-size applies when exporting; a bundle runs at the size it was exported at")
    check_writable(out, args.force)
    bundles = [
        (combo, path) for combo, path in find_bundles(folder)
        if (combo.output_stride in args.output_strides or not combo.output_stride)
        and combo.target in (args.targets or TARGETS) and combo.precision in args.precisions
    ]
    if not bundles:
        raise EdgeDeeplabError(f"no bundle in {folder} matches the --output-strides, --targets and --precisions given")
    first = read_manifest(bundles[0][1], verify_files=False)
    data = args.data or first.source.get("dataset") or "synthetic"
    samples = _open_samples(data, args.split, first.classes, args.val_images)
    measurement = Measurement(samples, data, args.split, widths, headline,
                              TimingSettings(args.runs, args.warmup, args.threads), args.verbose)
    print(f"report on {len(bundles)} bundles in {folder}, {len(samples)} images of {data}/{args.split}",
          file=sys.stderr)
    return report_from_bundles(bundles, folder, measurement, out, args.force)


def print_summary(report, out: Path) -> None:
    """The main table, what was not measured and why, and where the files are."""
    from edge_deeplab.report import main_table

    print(main_table(report))
    for row in report.rows:
        if not row.measured:
            print(f"not measured: {row.name}: {row.reason}")
    files = ", ".join(sorted(p.name for p in out.iterdir() if p.is_file()))
    print(f"wrote {out}/: {files}" + (" and bundles/" if (out / "bundles").is_dir() else ""))


def run(args: argparse.Namespace) -> int:
    if bool(args.checkpoints) == (args.bundles is not None):
        raise EdgeDeeplabError("give checkpoints to export and measure, or --bundles DIR to measure (not both)")
    if args.bundles is not None:
        out = args.out or Path("reports") / args.bundles.resolve().name
        report = report_bundles(args, args.bundles, out)
    else:
        checkpoints = [Path(c) for c in args.checkpoints]
        default = checkpoints[0].stem if len(checkpoints) == 1 else "compare-" + "-".join(
            c.parent.name or c.stem for c in checkpoints)
        out = args.out or Path("reports") / default
        report = report_checkpoint(args, checkpoints, out)
    print_summary(report, out)
    if not report.measured:
        raise EdgeDeeplabError(f"no combination could be measured on this machine; see {out / 'report.md'}")
    return 0
