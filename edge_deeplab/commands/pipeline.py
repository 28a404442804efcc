"""``edge-deeplab pipeline``: the README demo, from nothing to an accuracy-versus-latency report.

With no argument it trains the default model on the built-in synthetic set, then reports output
strides 8, 16 and 32 on every target this machine can run, and prints the table. ``--heads
dense,separable`` trains the default recipe once per head (dense 3x3 convs in ASPP and decoder,
or the paper's atrous separable ones) and reports both models in one table. The defaults are
sized to finish in about 20 minutes on a 2-core CPU (training about 10, the report under 8): 50
scored images and 20 timed runs per bundle; pass larger values for steadier figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge_deeplab.commands.report import add_report_options, print_summary, report_checkpoint
from edge_deeplab.config import TrainConfig, make_config
from runtime.errors import EdgeDeeplabError
from runtime.manifest import TARGETS

PIPELINE_DEFAULTS = {"val_images": 50, "calib_images": 64, "runs": 20, "warmup": 3}
# --heads choice -> TrainConfig.separable. Each head trains for its default number of steps
# (edge_deeplab.config.DEFAULT_ITERATIONS), the same training time, unless --iterations is given.
HEADS = {"dense": False, "separable": True}


def add_parser(subparsers, name: str) -> None:
    defaults = TrainConfig()
    parser = subparsers.add_parser(
        name,
        help="demo: train the default model on the synthetic set, then report OS 8/16/32 on every target here",
        description="Train the default model (MobileNetV2 DeepLabv3+ with the atrous separable head on the built-in "
                    "synthetic dataset, 3200 steps) into <out>/<head>, or reuse the finished run already there, then "
                    "export and measure it at output strides 8, 16 and 32 on every target this machine can run, "
                    "writing the report to <out>/report (measured again, and replaced, on every run). With "
                    "--heads dense,separable, each head is trained for the same time (the dense one 1600 steps) and "
                    "both are compared in one report.",
    )
    parser.add_argument("--heads", default="separable", metavar="LIST",
                        help=f"heads to train and compare: {', '.join(HEADS)} or both, comma-separated "
                             "(default separable)")
    parser.add_argument("--out", type=Path, default=Path("runs/pipeline"),
                        help="folder for the training run and the report (default runs/pipeline)")
    parser.add_argument("--iterations", type=int,
                        help="training steps for every head (default: each head's own, the same training time)")
    parser.add_argument("--batch-size", type=int, help=f"training batch size (default {defaults.batch_size})")
    parser.add_argument("--seed", type=int, help=f"training seed (default {defaults.seed})")
    parser.add_argument("--force", action="store_true", help="train again even if <out>/<head> holds a finished run")
    add_report_options(parser, PIPELINE_DEFAULTS, "targets (default: every target whose runtime is installed here)",
                       "dataset to train on and score (default synthetic)")
    parser.set_defaults(func=run)


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
    configuration time hold None, which meant the model config's own default (dense for
    MobileNetV2, separable for Xception-65)."""
    from edge_deeplab.models.config import ModelConfig

    if saved.get("separable") is not None:
        return saved["separable"]
    return ModelConfig(backbone=saved.get("backbone", "mobilenetv2"), num_classes=2).use_separable


def _train_in_child(config: TrainConfig, resume: bool, force: bool) -> Path:
    """Train in a fresh (spawned) process, then return the best checkpoint's path.

    The report that follows loads OpenVINO and ONNX Runtime, and a process that has run torch's
    DataLoader worker machinery and then OpenVINO's thread pool crashed here (a segfault after the
    report's timing); a child process keeps the two apart, and costs a second of start-up.
    """
    import multiprocessing

    child = multiprocessing.get_context("spawn").Process(target=_train_entry, args=(config, resume, force))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise EdgeDeeplabError(f"training stopped (exit status {child.exitcode}); rerun to resume it")
    return Path(config.out) / "best.pt"


def _train_entry(config: TrainConfig, resume: bool, force: bool) -> None:
    """The child's body: errors are printed as the CLI prints them, with a matching exit status."""
    from edge_deeplab.train import train

    try:
        train(config, resume=resume, force=force)
    except EdgeDeeplabError as exc:
        print(f"edge-deeplab pipeline: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def run(args: argparse.Namespace) -> int:
    from edge_deeplab.commands.report import check_numbers
    from edge_deeplab.report import runtime_unavailable

    check_numbers(args)  # a bad report option fails now, not after ten minutes of training
    heads = parse_heads(args.heads)
    if args.targets is None:
        args.targets = [t for t in TARGETS if runtime_unavailable(t) is None]
    configs = [make_config({}, {"data": args.data, "iterations": args.iterations, "batch_size": args.batch_size,
                                "seed": args.seed, "separable": HEADS[head], "out": str(args.out / head)})
               for head in heads]
    best = [train_or_reuse(config, args.force) for config in configs]
    report_dir = args.out / "report"
    args.force = True  # the report is the demo's output: measured afresh, replacing the last one
    report = report_checkpoint(args, best, report_dir)
    print_summary(report, report_dir)
    print(f"report: {report_dir / 'report.md'}")
    if not report.measured:
        raise EdgeDeeplabError(f"no combination could be measured on this machine; see {report_dir / 'report.md'}")
    return 0
