"""``edge-deeplab train``: options from defaults < ``--config`` YAML < flags."""

from __future__ import annotations

import argparse

from edge_deeplab.config import TrainConfig, load_yaml_config, make_config

BOOL = argparse.BooleanOptionalAction


def add_parser(subparsers, name: str) -> None:
    defaults = TrainConfig()
    p = subparsers.add_parser(
        name,
        help="train a DeepLabv3+ model",
        description="Train DeepLabv3+ (SGD, poly learning rate, cross-entropy with ignore index). "
        "Every option can also be set in a YAML file given with --config; flags override it. "
        f"Defaults train the edge model on the built-in synthetic dataset into {defaults.out}.",
    )
    p.add_argument("--config", help="YAML file with any of the options below (underscores or dashes)")
    p.add_argument("--data", help=f"dataset: 'synthetic' or a path (default {defaults.data})")
    p.add_argument("--val-data", help="validation dataset (default: the val split of --data)")
    p.add_argument("--backbone", choices=["mobilenetv2", "resnet50", "resnet101", "xception65"], help=f"default {defaults.backbone}")
    p.add_argument("--width-mult", type=float, help="MobileNetV2 width multiplier (default 1.0)")
    p.add_argument("--output-stride", type=int, choices=[8, 16, 32], help=f"training output stride (default {defaults.output_stride})")
    p.add_argument("--decoder", action=BOOL, default=None, help="DeepLabv3+ decoder (--no-decoder: DeepLabv3)")
    p.add_argument("--separable", action=BOOL, default=None,
                   help="atrous separable convs in ASPP and decoder (default: on for mobilenetv2 and xception65, "
                        "off for the ResNets; --no-separable for dense 3x3 convs)")
    p.add_argument("--backbone-weights", help="ImageNet backbone weights, a local torchvision-format state dict")
    p.add_argument("--iterations", type=int,
                   help="training steps (default 3200 with the separable head, 1600 with the dense one: the same time)")
    p.add_argument("--epochs", type=int, help="train for this many epochs instead of --iterations")
    p.add_argument("--batch-size", type=int, help=f"global batch size (default {defaults.batch_size})")
    p.add_argument("--crop-size", type=int, help=f"square training crop in pixels (default {defaults.crop_size})")
    p.add_argument("--lr", type=float, help=f"base learning rate (default {defaults.lr})")
    p.add_argument("--momentum", type=float, help=f"SGD momentum (default {defaults.momentum})")
    p.add_argument("--weight-decay", type=float, help=f"default {defaults.weight_decay}")
    p.add_argument("--poly-power", type=float, help=f"poly schedule power (default {defaults.poly_power})")
    p.add_argument("--seed", type=int, help=f"default {defaults.seed}")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--amp", action=BOOL, default=None, help="mixed precision on CUDA (default on)")
    p.add_argument("--val-every", type=int, help=f"validate and checkpoint every N steps (default {defaults.val_every})")
    p.add_argument("--val-images", type=int, help="validate on at most this many images")
    p.add_argument("--workers", type=int, help=f"data loading processes (default {defaults.workers})")
    p.add_argument("--out", help=f"run directory for checkpoints and logs (default {defaults.out})")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    p.add_argument("--force", action="store_true", help="start over in an --out that already holds a run")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge_deeplab.train import train

    file_values = load_yaml_config(args.config) if args.config else {}
    flags = {name: getattr(args, name, None) for name in TrainConfig.field_names()}
    config = make_config(file_values, flags)
    best = train(config, resume=args.resume, force=args.force)
    print(f"best checkpoint: {best}")
    return 0
