"""``edge-deeplab train``: options from defaults < ``--config`` YAML < flags.

Every flag defaults to "not given" so that a YAML file's value is not overridden by a default;
``--help`` shows the default that applies when neither gives one (:class:`TrainConfig`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from edge_deeplab.commands.options import Backbone, OutputStride, stride, value
from edge_deeplab.config import DEFAULT_ITERATIONS, OPTION_RANGES, TrainConfig, load_yaml_config, make_config

DEFAULTS = TrainConfig()
app = typer.Typer()


def _default(name: str) -> str:
    return str(getattr(DEFAULTS, name))


def _ranged(name: str, help: str, shown: str | None = None) -> Any:
    """A numeric option: its range from :data:`OPTION_RANGES` (which also checks a --config file's
    value), shown in --help beside the default that applies when it is not given."""
    return typer.Option(click_type=OPTION_RANGES[name], help=help, show_default=shown or _default(name))


@app.command(help="Train DeepLabv3+ (SGD, poly learning rate, cross-entropy with ignore index). Every option can "
                  "also be set in a YAML file given with --config; flags override it. The defaults train the edge "
                  f"model on the built-in synthetic dataset into {DEFAULTS.out}.")
def train(
    config: Annotated[Optional[Path], typer.Option(help="YAML file with any of the options below "
                                                        "(underscores or dashes)", show_default="none")] = None,
    data: Annotated[Optional[str], typer.Option(help="dataset: 'synthetic' or a path",
                                                show_default=_default("data"))] = None,
    val_data: Annotated[Optional[str], typer.Option(help="validation dataset",
                                                    show_default="the val split of --data")] = None,
    backbone: Annotated[Optional[Backbone], typer.Option(show_default=_default("backbone"))] = None,
    width_mult: Annotated[Optional[float], _ranged("width_mult", "MobileNetV2 width multiplier")] = None,
    output_stride: Annotated[Optional[OutputStride], typer.Option(help="training output stride",
                                                                  show_default=_default("output_stride"))] = None,
    decoder: Annotated[Optional[bool], typer.Option("--decoder/--no-decoder",
                                                    help="DeepLabv3+ decoder (--no-decoder: DeepLabv3)",
                                                    show_default="decoder")] = None,
    separable: Annotated[Optional[bool], typer.Option(
        "--separable/--no-separable", show_default="on for mobilenetv2 and xception65, off for the ResNets",
        help="atrous separable convs in ASPP and decoder (--no-separable: dense 3x3 convs)")] = None,
    backbone_weights: Annotated[Optional[str], typer.Option(
        help="ImageNet backbone weights, a local torchvision-format state dict",
        show_default="random initialization")] = None,
    iterations: Annotated[Optional[int], _ranged(
        "iterations", "training steps", f"{DEFAULT_ITERATIONS[True]} with the separable head, "
                                        f"{DEFAULT_ITERATIONS[False]} with the dense one: the same time")] = None,
    epochs: Annotated[Optional[int], _ranged("epochs", "train for this many epochs instead of --iterations",
                                             "none: --iterations counts")] = None,
    batch_size: Annotated[Optional[int], _ranged("batch_size", "global batch size")] = None,
    crop_size: Annotated[Optional[int], _ranged("crop_size", "square training crop in pixels")] = None,
    lr: Annotated[Optional[float], _ranged("lr", "base learning rate")] = None,
    momentum: Annotated[Optional[float], _ranged("momentum", "SGD momentum")] = None,
    weight_decay: Annotated[Optional[float], _ranged("weight_decay", "L2 weight decay (not on BN or depthwise convs)")
                            ] = None,
    poly_power: Annotated[Optional[float], _ranged("poly_power", "poly schedule power")] = None,
    warmup_steps: Annotated[Optional[int], _ranged(
        "warmup_steps", "steps of linear learning-rate warm-up before the poly decay (at most a quarter of the run)")
                            ] = None,
    seed: Annotated[Optional[int], _ranged("seed", "seed of initialization, batches and augmentation")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda or cuda:N", show_default=_default("device"))] = None,
    amp: Annotated[Optional[bool], typer.Option("--amp/--no-amp", help="mixed precision on CUDA",
                                                show_default="amp")] = None,
    val_every: Annotated[Optional[int], _ranged("val_every", "validate and checkpoint every N steps")] = None,
    val_images: Annotated[Optional[int], _ranged("val_images", "validate on at most this many images", "all")] = None,
    workers: Annotated[Optional[int], _ranged("workers", "data loading processes")] = None,
    out: Annotated[Optional[str], typer.Option(help="run directory for checkpoints and logs",
                                               show_default=_default("out"))] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the run in --out from its last.pt")] = False,
    force: Annotated[bool, typer.Option("--force", help="start over in an --out that already holds a run")] = False,
) -> int:
    given = dict(locals())  # the flags, named as TrainConfig's fields
    flags = {name: given[name] for name in TrainConfig.field_names()}
    flags.update(backbone=value(backbone), output_stride=stride(output_stride))
    config_values = load_yaml_config(config) if config else {}
    settings = make_config(config_values, flags)
    run_dir = Path(settings.out)
    from runtime.outputs import refuse_overlap

    # --force clears the run files in --out: no input may live there.
    refuse_overlap(run_dir, [settings.data, settings.val_data, settings.backbone_weights])
    from edge_deeplab.devices import torch_device
    from edge_deeplab.train import train as run_training

    torch_device(settings.device)  # this machine has it, before any work
    try:
        best = run_holding_out(run_dir, lambda: run_training(settings, resume=resume, force=force))
    except KeyboardInterrupt:
        from runtime.signals import kept, note_kept

        if kept():  # a checkpoint was saved
            note_kept("continue with --resume")
        raise
    print(f"best checkpoint: {best}")
    return 0


def run_holding_out(run_dir: Path, run: Callable[[], Path]) -> Path:
    """Run the training holding --out against a second run (rank 0 only under torchrun: the other
    ranks write nothing), and remove --out again when a run that made it fails before writing."""
    from runtime.files import missing_folders, remove_empty
    from runtime.outputs import output_lock

    if os.environ.get("RANK", "0") != "0":
        return run()
    made = missing_folders(run_dir)
    try:
        with output_lock(run_dir):
            return run()
    except BaseException:
        remove_empty(made)
        raise
