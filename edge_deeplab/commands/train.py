"""``edge-deeplab train``: options from defaults < ``--config`` YAML < flags.

Every flag defaults to "not given" so that a YAML file's value is not overridden by a default;
``--help`` shows the default that applies when neither gives one (:class:`TrainConfig`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edge_deeplab.commands.options import Backbone, OutputStride, stride, value
from edge_deeplab.config import DEFAULT_ITERATIONS, TrainConfig, load_yaml_config, make_config

DEFAULTS = TrainConfig()
app = typer.Typer()


def _default(name: str) -> str:
    return str(getattr(DEFAULTS, name))


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
    width_mult: Annotated[Optional[float], typer.Option(help="MobileNetV2 width multiplier",
                                                        show_default=_default("width_mult"))] = None,
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
    iterations: Annotated[Optional[int], typer.Option(
        help="training steps", show_default=f"{DEFAULT_ITERATIONS[True]} with the separable head, "
                                            f"{DEFAULT_ITERATIONS[False]} with the dense one: the same time")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="train for this many epochs instead of --iterations",
                                                  show_default="none: --iterations counts")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="global batch size",
                                                      show_default=_default("batch_size"))] = None,
    crop_size: Annotated[Optional[int], typer.Option(help="square training crop in pixels",
                                                     show_default=_default("crop_size"))] = None,
    lr: Annotated[Optional[float], typer.Option(help="base learning rate", show_default=_default("lr"))] = None,
    momentum: Annotated[Optional[float], typer.Option(help="SGD momentum", show_default=_default("momentum"))] = None,
    weight_decay: Annotated[Optional[float], typer.Option(help="L2 weight decay (not on BN or depthwise convs)",
                                                          show_default=_default("weight_decay"))] = None,
    poly_power: Annotated[Optional[float], typer.Option(help="poly schedule power",
                                                        show_default=_default("poly_power"))] = None,
    warmup_steps: Annotated[Optional[int], typer.Option(help="steps of linear learning-rate warm-up before the poly "
                                                                "decay (at most a quarter of the run)", show_default=_default("warmup_steps"))] = None,
    seed: Annotated[Optional[int], typer.Option(show_default=_default("seed"))] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda or cuda:N", show_default=_default("device"))] = None,
    amp: Annotated[Optional[bool], typer.Option("--amp/--no-amp", help="mixed precision on CUDA",
                                                show_default="amp")] = None,
    val_every: Annotated[Optional[int], typer.Option(help="validate and checkpoint every N steps",
                                                     show_default=_default("val_every"))] = None,
    val_images: Annotated[Optional[int], typer.Option(help="validate on at most this many images",
                                                      show_default="all")] = None,
    workers: Annotated[Optional[int], typer.Option(help="data loading processes",
                                                   show_default=_default("workers"))] = None,
    out: Annotated[Optional[str], typer.Option(help="run directory for checkpoints and logs",
                                               show_default=_default("out"))] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the run in --out from its last.pt")] = False,
    force: Annotated[bool, typer.Option("--force", help="start over in an --out that already holds a run")] = False,
) -> int:
    given = dict(locals())  # the flags, named as TrainConfig's fields
    flags = {name: given[name] for name in TrainConfig.field_names()}
    flags.update(backbone=value(backbone), output_stride=stride(output_stride))
    config_values = load_yaml_config(config) if config else {}
    from edge_deeplab.train import train as run_training

    best = run_training(make_config(config_values, flags), resume=resume, force=force)
    print(f"best checkpoint: {best}")
    return 0
