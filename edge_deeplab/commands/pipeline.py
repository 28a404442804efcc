"""``edge-deeplab pipeline``: the main job, from nothing to an accuracy-versus-latency report.

With no argument it trains the default model on the built-in synthetic set, then reports output
strides 8, 16 and 32 on every target this machine can run, and prints the table. ``--quick`` is
the README's first command: a short training, then INT8 for ONNX Runtime and OpenVINO (with their
FP32 references) at the three strides, in a few minutes on a 2-core CPU. ``--heads
dense,separable`` trains the default recipe once per head (dense 3x3 convs in ASPP and decoder, or
the paper's atrous separable ones) and reports both models in one table. The full defaults are
sized for 20 minutes on a 2-core AVX2 CPU (training about 15): 50 scored images and 20 timed runs
per bundle; pass larger values for steadier figures.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer
from click.core import ParameterSource

from calibration.ranges import DEFAULT_METHOD
from edge_deeplab.commands.options import RUNTIME_DEFAULTS, CalibMethod, Threads, listed
from edge_deeplab.commands.report import (BAND_WIDTHS, HEADLINE_BAND_WIDTH, BandWidth, BandWidths, CalibData,
                                          CalibImages, CalibMethodOpt, CalibSeed, Data, InputSize, KeepBundles,
                                          MaxDrop, OutputStrides, Precisions, Qat, QatLr, Runs, Split, Verbose,
                                          Warmup, check_numbers, print_summary, report_args, report_checkpoint,
                                          targets_option, val_images_option)
from edge_deeplab.config import DEFAULT_ITERATIONS, OPTION_RANGES, TrainConfig, make_config
from edge_deeplab.models.config import OUTPUT_STRIDES
from runtime.errors import EdgeDeeplabError
from runtime.files import check_can_create
from runtime.manifest import PRECISIONS, TARGETS
from runtime.outputs import refuse_overlap

# --heads choice -> TrainConfig.separable. Each head trains for its default number of steps
# (edge_deeplab.config.DEFAULT_ITERATIONS), the same training time, unless --iterations is given.
HEADS = {"dense": False, "separable": True}
# What --quick changes, for the options not given on the command line: 300 steps of the default
# separable training (0.62 mIoU), INT8 for the two CPU runtimes beside their FP32 references,
# fewer images and runs. Sized for 8 minutes on a 2-core AVX2 CPU, install included (README,
# "Install and try it").
QUICK = {"out": Path("runs/quick"), "iterations": 300, "targets": "onnx,onnxruntime,openvino",
         "precisions": "fp32,int8", "val_images": 30, "calib_images": 32, "runs": 10, "warmup": 2}
TRAIN_DEFAULTS = TrainConfig()
app = typer.Typer()


@app.command(help="Train the default model (MobileNetV2 DeepLabv3+ with the atrous separable head on the built-in "
                  "synthetic dataset) into <out>/<head>, or reuse the finished run already there, then export and "
                  "measure it at output strides 8, 16 and 32 on every target this machine can run, writing the report "
                  "to <out>/report (measured again, and replaced, on every run). --quick: the same in a few minutes. "
                  "With --heads dense,separable, each head is trained for the same time and both are compared in one "
                  "report.")
def pipeline(
    ctx: typer.Context,
    quick: Annotated[bool, typer.Option(
        "--quick", help="a short demo of the main job: " + ", ".join(f"--{k.replace('_', '-')} {v}"
                                                                     for k, v in QUICK.items())
        + " (options given on the command line still win)")] = False,
    heads: Annotated[str, typer.Option(metavar="LIST", help=f"heads to train and compare: {listed(HEADS)} or both, "
                                                            "comma-separated")] = "separable",
    out: Annotated[Path, typer.Option(help="folder for the training runs and the report")] = Path("runs/pipeline"),
    iterations: Annotated[Optional[int], typer.Option(
        click_type=OPTION_RANGES["iterations"], help="training steps for every head",
        show_default=f"each head's own: {DEFAULT_ITERATIONS[True]} separable, {DEFAULT_ITERATIONS[False]} dense, "
                     "the same training time")] = None,
    batch_size: Annotated[Optional[int], typer.Option(click_type=OPTION_RANGES["batch_size"],
                                                      help="training batch size",
                                                      show_default=str(TRAIN_DEFAULTS.batch_size))] = None,
    seed: Annotated[Optional[int], typer.Option(click_type=OPTION_RANGES["seed"], help="training seed",
                                                show_default=str(TRAIN_DEFAULTS.seed))] = None,
    force: Annotated[bool, typer.Option("--force", help="train again even if <out>/<head> holds a finished run")
                     ] = False,
    data: Data = None,
    split: Split = "val",
    output_strides: OutputStrides = listed(OUTPUT_STRIDES),
    targets: Annotated[Optional[str], targets_option("every target whose runtime is installed here")] = None,
    precisions: Precisions = listed(PRECISIONS),
    input_size: InputSize = None,
    val_images: Annotated[Optional[int], val_images_option()] = 50,
    calib_data: CalibData = None,
    calib_images: CalibImages = 64,
    calib_method: CalibMethodOpt = CalibMethod(DEFAULT_METHOD),
    calib_seed: CalibSeed = 0,
    max_drop: MaxDrop = None,
    qat: Qat = None,
    qat_lr: QatLr = None,
    runs: Runs = 20,
    warmup: Warmup = 3,
    threads: Threads = RUNTIME_DEFAULTS.threads,
    band_widths: BandWidths = BAND_WIDTHS,
    band_width: BandWidth = HEADLINE_BAND_WIDTH,
    keep_bundles: KeepBundles = True,
    verbose: Verbose = False,
) -> int:
    given = dict(locals())
    if quick:  # the preset fills what the command line left at its default
        given.update({name: preset for name, preset in QUICK.items()
                      if ctx.get_parameter_source(name) == ParameterSource.DEFAULT})
    train_options = {name: given.pop(name) for name in ("ctx", "quick", "heads", "out", "iterations", "batch_size",
                                                        "seed")}
    args = report_args(**given)
    check_numbers(args)  # a bad report option fails now, not after ten minutes of training
    chosen = parse_heads(train_options["heads"])
    if args.targets is None:
        from edge_deeplab.report import runtime_unavailable

        args = replace(args, targets=[t for t in TARGETS if runtime_unavailable(t) is None])
    folder: Path = train_options["out"]
    refuse_overlap(folder, [args.data, args.calib_data])
    configs = [make_config({}, {"data": args.data, "iterations": train_options["iterations"],
                                "batch_size": train_options["batch_size"], "seed": train_options["seed"],
                                "separable": HEADS[head], "out": str(folder / head)})
               for head in chosen]
    for config in configs:
        check_can_create(Path(config.out) / "last.pt")  # --out is a folder we can write in
    best = [train_or_reuse(config, args.force) for config in configs]
    report_dir = folder / "report"
    # The report is the pipeline's output: measured afresh, replacing the last one.
    result = report_checkpoint(replace(args, force=True), best, report_dir)
    print_summary(result, report_dir)
    print(f"report: {report_dir / 'report.md'}")
    if not result.measured:
        raise EdgeDeeplabError(f"no combination could be measured on this machine; see {report_dir / 'report.md'}")
    return 0


def parse_heads(text: str) -> list[str]:
    """``dense,separable`` -> the heads in the order given, each once; anything else is one line."""
    heads = [h.strip() for h in text.split(",") if h.strip()]
    bad = [h for h in heads if h not in HEADS]
    if bad or not heads:
        raise EdgeDeeplabError(f"--heads {text!r}: choose from {', '.join(HEADS)} (comma-separated)")
    return list(dict.fromkeys(heads))


def train_or_reuse(config: TrainConfig, force: bool) -> Path:
    """Train, resume an interrupted run, or reuse a finished one with the same options.

    ``train`` writes ``train_config.json`` last, so its presence marks a run that finished; a run
    with other options is not silently reused for a report that would then describe the wrong model.
    """
    run_dir = Path(config.out)
    finished, best, last = run_dir / "train_config.json", run_dir / "best.pt", run_dir / "last.pt"
    if not force and finished.is_file() and best.is_file():
        try:
            saved = json.loads(finished.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise EdgeDeeplabError(f"cannot read {finished} ({exc}); pass --force to train again") from None
        wanted = config.to_dict()
        saved["separable"] = _resolved_head(saved)
        # "out" may be spelt another way for the same folder; "workers" does not change the model.
        changed = sorted(k for k in wanted if k not in ("out", "workers") and saved.get(k) != wanted[k])
        if changed:
            raise EdgeDeeplabError(f"{run_dir} holds a finished run with other {', '.join(changed)}; "
                                   "pass --force to train again, or another --out")
        print(f"reusing the trained model {best} (pass --force to train again)", file=sys.stderr)
        return best
    if not force and last.is_file():
        print(f"resuming the interrupted training run in {run_dir}", file=sys.stderr)
        return _train_in_child(config, resume=True, force=False)
    return _train_in_child(config, resume=False, force=force)


def _resolved_head(saved: dict) -> bool | None:
    """A saved run's ``separable`` as a bool: runs saved before the default head was resolved at
    configuration time hold None, which then meant dense for MobileNetV2, separable for Xception-65."""
    from edge_deeplab.models.config import separable_before_v2

    if saved.get("separable") is not None:
        return saved["separable"]
    return separable_before_v2(saved.get("backbone", "mobilenetv2"))


def _train_in_child(config: TrainConfig, resume: bool, force: bool) -> Path:
    """Train in a fresh (spawned) process, then return the best checkpoint's path.

    The report that follows loads OpenVINO and ONNX Runtime, and a process that has run torch's
    DataLoader worker machinery and then OpenVINO's thread pool crashed here (a segfault after the
    report's timing); a child process keeps the two apart, and costs a second of start-up.

    The child sends back what it has to say (its error line, or what a stop kept), so the user
    sees one line, the child's. Stopping the pipeline stops the child the same way: it saves its
    checkpoint before the pipeline exits.
    """
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_train_entry, args=(config, resume, force, send))
    child.start()
    send.close()
    try:
        child.join()
    except KeyboardInterrupt:
        child.terminate()  # SIGTERM: the child stops as on Ctrl-C (a second one is ignored there)
        child.join()
        _relay(receive)
        raise
    said = _relay(receive)
    if child.exitcode == 0:
        return Path(config.out) / "best.pt"
    if said is not None:
        raise EdgeDeeplabError(said)
    last = Path(config.out) / "last.pt"
    resume_hint = f"; rerun to resume it from {last}" if last.is_file() else ""
    how = f"signal {-child.exitcode}" if child.exitcode < 0 else f"exit status {child.exitcode}"
    raise EdgeDeeplabError(f"the training process ended with {how}{resume_hint}")


def _relay(receive) -> str | None:
    """The child's error line, if it sent one; what a stopped child kept goes to the stop's line."""
    from runtime.signals import note_kept

    try:
        kind, text = receive.recv() if receive.poll() else (None, None)
    except EOFError:
        return None
    if kind == "kept" and text:
        note_kept(f"{text}; run the pipeline again to resume")
    return text if kind == "error" else None


def _train_entry(config: TrainConfig, resume: bool, force: bool, send) -> None:
    """The child's body: an error or a stop is sent to the parent as the CLI would say it."""
    from edge_deeplab.commands.train import run_holding_out
    from edge_deeplab.train import train
    from runtime.files import path_error
    from runtime.signals import kept, stop_on_signals

    with stop_on_signals():
        threading.Thread(target=_stop_when_orphaned, args=(os.getppid(),), daemon=True).start()
        try:
            run_holding_out(Path(config.out), lambda: train(config, resume=resume, force=force))
        except EdgeDeeplabError as exc:
            _tell(send, "error", str(exc))
            sys.exit(2)
        except OSError as exc:
            _tell(send, "error", str(path_error(exc)))
            sys.exit(2)
        except KeyboardInterrupt:
            _tell(send, "kept", kept())
            sys.exit(130)


def _tell(send, kind: str, text: str) -> None:
    """Send the parent a message; a parent already gone (killed outright) has nothing to hear."""
    try:
        send.send((kind, text))
    except OSError:
        pass


def _stop_when_orphaned(parent: int) -> None:
    """Stop the training as SIGTERM would (keeping its checkpoint) once the pipeline that started it
    is gone: killed outright (SIGKILL), it could not stop the child, which would train on unseen."""
    while os.getppid() == parent:
        time.sleep(1)
    os.kill(os.getpid(), signal.SIGTERM)
