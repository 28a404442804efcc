"""``edge-deeplab report``: accuracy against latency for every output stride, target and precision.

From one or several checkpoints (compared in one table), every combination this machine can build
is exported (into ``<out>/bundles``) and measured; with ``--bundles DIR``, bundles exported
elsewhere are measured as they are, without torch (the way to report on a Jetson). The work is
:mod:`edge_deeplab.report`; this module turns options into its settings, checking everything cheap
before anything slow starts. ``pipeline`` shares the report's options, defined here once.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import util
from pathlib import Path
from typing import Annotated, Any, List, Optional

import typer

from calibration.ranges import DEFAULT_METHOD
from edge_deeplab.commands.options import (RUNTIME_DEFAULTS, CalibMethod, Threads, listed, parse_list, parse_widths,
                                           size_option)
from edge_deeplab.evaluate import DEFAULT_BAND_WIDTHS
from edge_deeplab.export import check_input_size_limit
from edge_deeplab.export_request import DEFAULT_QAT_LR
from edge_deeplab.ranges import FiniteFloat
from edge_deeplab.models.config import OUTPUT_STRIDES
from runtime.errors import EdgeDeeplabError
from runtime.manifest import PRECISIONS, TARGET_PRECISIONS, TARGETS

app = typer.Typer()


@dataclass(frozen=True)
class ReportArgs:
    """The settings ``report`` and ``pipeline`` share, parsed (lists are lists, sizes tuples)."""

    data: str | None
    split: str
    output_strides: list[int]
    targets: list[str] | None  # None: every target (report) or every one runnable here (pipeline)
    precisions: list[str]
    input_size: tuple[int, int] | None
    val_images: int | None
    calib_data: str | None
    calib_images: int
    calib_method: str
    calib_seed: int
    max_drop: float | None
    qat: int | None
    qat_lr: float | None
    runs: int
    warmup: int
    threads: int
    band_widths: str
    band_width: int
    keep_bundles: bool
    verbose: bool
    force: bool


def report_args(output_strides: str, targets: str | None, precisions: str, calib_method: CalibMethod,
                **given) -> ReportArgs:
    """The shared options as typer gave them -> :class:`ReportArgs` (the lists checked against their
    tables, --qat against the precisions)."""
    args = ReportArgs(
        output_strides=[int(s) for s in parse_list(output_strides, OUTPUT_STRIDES, "--output-strides")],
        targets=parse_list(targets, TARGETS, "--targets") if targets else None,
        precisions=parse_list(precisions, PRECISIONS, "--precisions"),
        calib_method=calib_method.value,
        **given,
    )
    check_qat(args)
    return args


def check_qat(args: ReportArgs) -> None:
    """One line, before any work, when --qat would fine-tune nothing: it makes QAT rows of INT8 ones."""
    if args.qat is None:
        if args.qat_lr is not None:
            raise EdgeDeeplabError("--qat-lr goes with --qat STEPS")
        return
    if "int8" not in args.precisions:
        raise EdgeDeeplabError(f"--qat fine-tunes INT8 models; --precisions {','.join(args.precisions)} has no int8")
    if not any("int8" in TARGET_PRECISIONS[t] for t in args.targets or TARGETS):
        raise EdgeDeeplabError(f"--qat fine-tunes INT8 models; none of --targets {','.join(args.targets or [])} "
                               "offers int8")


# The options both commands take, each defined once; each command gives its own default.
Data = Annotated[Optional[str], typer.Option(help="labelled dataset to score on (and train on, in the pipeline)",
                                             show_default="the checkpoint's training dataset, or 'synthetic'")]
Split = Annotated[str, typer.Option(help="dataset split to score")]
OutputStrides = Annotated[str, typer.Option(metavar="LIST", help=f"output strides to export and compare, from "
                                                                 f"{listed(OUTPUT_STRIDES)}")]
Precisions = Annotated[str, typer.Option(metavar="LIST", help=f"precisions, from {listed(PRECISIONS)}; each target "
                                                              "gets those it offers")]
InputSize = Annotated[Optional[str], typer.Option(
    metavar="HxW", callback=size_option, help="static input size of the exported bundles",
    show_default="the scored images' size, the largest height and width among them")]
CalibData = Annotated[Optional[str], typer.Option(help="INT8 calibration dataset, train split",
                                                  show_default="--data")]
CalibImages = Annotated[int, typer.Option(min=1, help="INT8 calibration images")]
CalibMethodOpt = Annotated[CalibMethod, typer.Option("--calib-method",
                                                     help="range method for the onnxruntime/tensorrt INT8")]
CalibSeed = Annotated[int, typer.Option(help="seed of the calibration pick")]
MaxDrop = Annotated[Optional[float], typer.Option(
    metavar="POINTS", click_type=FiniteFloat(min=0), show_default="no guard",
    help="INT8 accuracy guard on the scored images: largest mIoU drop against FP32, in points")]
Qat = Annotated[Optional[int], typer.Option(
    metavar="STEPS", min=1, show_default="none: post-training quantization only",
    help="quantization-aware fine-tuning, as export --qat: each INT8 combination is exported twice, a PTQ row and a "
         "QAT row whose weights were trained for STEPS steps with the target's quantization in the forward pass "
         "(about 10 % of the model's training steps) on the checkpoint's training data (or --data's train split)")]
QatLr = Annotated[Optional[float], typer.Option(
    click_type=FiniteFloat(min=0, min_open=True), show_default=f"{DEFAULT_QAT_LR:g}",
    help="--qat's learning rate (Adam, decaying to zero)")]
Runs = Annotated[int, typer.Option(min=1, help="timed runs per bundle")]
Warmup = Annotated[int, typer.Option(min=0, help="untimed runs per bundle first")]
BandWidths = Annotated[str, typer.Option(help="trimap band widths for boundary mIoU, pixels, comma-separated")]
BandWidth = Annotated[int, typer.Option(help="the band width shown in the main table (one of --band-widths)")]
KeepBundles = Annotated[bool, typer.Option(help="keep the exported bundles in <out>/bundles")]
Verbose = Annotated[bool, typer.Option("-v", "--verbose", help="show the exporters' messages as they come")]


def targets_option(shown: str) -> Any:
    """``--targets``; ``shown`` is what the command measures when it is not given."""
    return typer.Option(metavar="LIST", show_default=shown,
                        help=f"targets, from {listed(TARGETS)}; one this machine cannot run is listed as not "
                             "measured, with the reason")


def val_images_option(shown: str | bool = True) -> Any:
    """``--val-images`` (alias ``--limit``); ``shown``: its default as --help states it."""
    return typer.Option("--val-images", "--limit", metavar="N", min=1, help="score at most N images",
                        show_default=shown)


# Defaults the two commands share; those that differ (images, runs) each command states.
BAND_WIDTHS = listed(DEFAULT_BAND_WIDTHS)
HEADLINE_BAND_WIDTH = 4


@app.command(help="Export a checkpoint at every output stride, target and precision this machine can build, score "
                  "each bundle through the runtime (mIoU, per-class IoU, boundary mIoU, pixel accuracy), time them "
                  "all interleaved, and write report.md, report.csv, report.json and plots. With --bundles, measure "
                  "bundles already exported (no torch needed: for the device).")
def report(
    checkpoints: Annotated[Optional[List[Path]], typer.Argument(
        metavar="CHECKPOINT...", show_default=False,
        help="edge-deeplab checkpoints (.pt), several to compare them in one table (same classes); or give "
             "--bundles")] = None,
    bundles: Annotated[Optional[Path], typer.Option(
        metavar="DIR", help="measure the bundles in DIR (every subfolder with a model.json) instead of "
                            "exporting")] = None,
    out: Annotated[Optional[Path], typer.Option(
        help="report folder", show_default="reports/<checkpoint name>, reports/compare-<names> for several, or "
                                           "reports/<DIR name>")] = None,
    force: Annotated[bool, typer.Option("--force", help="replace an existing report folder")] = False,
    data: Data = None,
    split: Split = "val",
    output_strides: OutputStrides = listed(OUTPUT_STRIDES),
    targets: Annotated[Optional[str], targets_option("all of them")] = None,
    precisions: Precisions = listed(PRECISIONS),
    input_size: InputSize = None,
    val_images: Annotated[Optional[int], val_images_option("the whole split")] = None,
    calib_data: CalibData = None,
    calib_images: CalibImages = 100,
    calib_method: CalibMethodOpt = CalibMethod(DEFAULT_METHOD),
    calib_seed: CalibSeed = 0,
    max_drop: MaxDrop = None,
    qat: Qat = None,
    qat_lr: QatLr = None,
    runs: Runs = 50,
    warmup: Warmup = 5,
    threads: Threads = RUNTIME_DEFAULTS.threads,
    band_widths: BandWidths = BAND_WIDTHS,
    band_width: BandWidth = HEADLINE_BAND_WIDTH,
    keep_bundles: KeepBundles = True,
    verbose: Verbose = False,
) -> int:
    given = dict(locals())
    for name in ("checkpoints", "bundles", "out"):
        del given[name]
    args = report_args(**given)
    if bool(checkpoints) == (bundles is not None):
        raise EdgeDeeplabError("give checkpoints to export and measure, or --bundles DIR to measure (not both)")
    if bundles is not None:
        out = out or Path("reports") / bundles.resolve().name
        result = report_bundles(args, bundles, out)
    else:
        default = checkpoints[0].stem if len(checkpoints) == 1 else "compare-" + "-".join(
            c.parent.name or c.stem for c in checkpoints)
        out = out or Path("reports") / default
        result = report_checkpoint(args, checkpoints, out)
    print_summary(result, out)
    if not result.measured:
        raise EdgeDeeplabError(f"no combination could be measured on this machine; see {out / 'report.md'}")
    return 0


def check_numbers(args: ReportArgs) -> tuple[tuple[int, ...], int]:
    """The numeric options, checked before any slow work; returns (band widths, headline width)."""
    widths = parse_widths(args.band_widths)
    if args.band_width not in widths:
        raise EdgeDeeplabError(f"--band-width {args.band_width} is not one of --band-widths {args.band_widths}")
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


def _open_samples(spec: str, split: str, classes: list[str], limit: int | None, recorded: bool):
    from edge_deeplab.data.base import open_scoring_data
    from edge_deeplab.report import SampleList

    return SampleList(open_scoring_data(spec, split, classes, recorded), limit)


def report_checkpoint(args: ReportArgs, checkpoints: list[Path], out: Path):
    """The checkpoint path of ``report`` (also the pipeline's last step); returns the Report."""
    from runtime.outputs import output_lock, refuse_overlap

    refuse_overlap(out, [*checkpoints, args.data, args.calib_data])
    with output_lock(out):
        return _report_checkpoint(args, checkpoints, out)


def _report_checkpoint(args: ReportArgs, checkpoints: list[Path], out: Path):
    from edge_deeplab.report import (ExportSettings, Measurement, TimingSettings, model_labels, plan_combinations,
                                     report_from_checkpoint)
    from runtime.files import check_writable

    widths, headline = check_numbers(args)
    combos = plan_combinations(args.output_strides, args.targets or list(TARGETS), args.precisions,
                               qat=args.qat is not None)
    check_writable(out, args.force)
    check_distinct(checkpoints)
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
    samples = _open_samples(data, args.split, ckpt.classes, args.val_images, not args.data and bool(ckpt.dataset))
    height, width = args.input_size or samples.largest_size()
    check_input_size((height, width), max(args.output_strides))
    measurement = Measurement(samples, data, args.split, widths, headline,
                              TimingSettings(args.runs, args.warmup, args.threads), args.verbose)
    export = ExportSettings(height, width, args.calib_data or data, args.calib_images, args.calib_method,
                            args.calib_seed, args.max_drop, qat_steps=args.qat, qat_lr=args.qat_lr,
                            qat_data=args.data)
    labels = model_labels(ckpts) if len(ckpts) > 1 else [""]
    what = ", ".join(f"{path} ({label})" if label else str(path) for path, label in zip(checkpoints, labels))
    print(f"report on {len(combos)} combinations of {what} at {height}x{width}, "
          f"{len(samples)} images of {data}/{args.split}", file=sys.stderr)
    return report_from_checkpoint(list(zip(labels, ckpts)), combos, measurement, export, out, args.force,
                                  args.keep_bundles)


def check_distinct(checkpoints: list[Path]) -> None:
    """One line when a checkpoint is given twice (by two names, or as two copies): its rows would
    carry the same name, and a report compares different models."""
    from runtime.files import sha256_file

    seen: dict[str, Path] = {}
    for path in checkpoints:
        try:
            digest = sha256_file(path)
        except OSError:
            continue  # loading it says what is wrong with it
        if digest in seen:
            twice = Path(path).resolve() == Path(seen[digest]).resolve()
            same = "given twice" if twice else f"the same file as {seen[digest]}"
            raise EdgeDeeplabError(f"checkpoint {path} is {same}; a report compares different checkpoints")
        seen[digest] = path


def report_bundles(args: ReportArgs, folder: Path, out: Path):
    """The ``--bundles`` path: torch-free from end to end."""
    from runtime.outputs import output_lock, refuse_overlap

    refuse_overlap(out, [folder, args.data])
    with output_lock(out):
        return _report_bundles(args, folder, out)


def _report_bundles(args: ReportArgs, folder: Path, out: Path):
    from edge_deeplab.report import Measurement, TimingSettings, find_bundles, report_from_bundles
    from runtime.files import check_writable
    from runtime.manifest import read_manifest

    widths, headline = check_numbers(args)
    if args.input_size is not None:
        raise EdgeDeeplabError("--input-size applies when exporting; a bundle runs at the size it was exported at")
    if args.qat is not None:
        raise EdgeDeeplabError("--qat applies when exporting; a bundle exported with --qat is a QAT row already")
    check_writable(out, args.force)
    bundles = [
        (combo, path) for combo, path in find_bundles(folder)
        if (combo.output_stride in args.output_strides or not combo.output_stride)
        and combo.target in (args.targets or TARGETS) and combo.precision in args.precisions
    ]
    if not bundles:
        raise EdgeDeeplabError(f"no bundle in {folder} matches the --output-strides, --targets and --precisions given")
    first = read_manifest(bundles[0][1], verify_files=False)
    recorded = first.source.get("dataset")
    data = args.data or recorded or "synthetic"
    samples = _open_samples(data, args.split, first.classes, args.val_images, not args.data and bool(recorded))
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
