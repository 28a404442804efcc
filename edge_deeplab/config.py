"""Training options: one dataclass, filled from defaults, then a YAML file, then command-line flags.

Torch-free so that ``edge-deeplab train --help`` and config validation work anywhere.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, get_args, get_type_hints

import yaml

from edge_deeplab import ranges
from edge_deeplab.models.config import OUTPUT_STRIDES, SEPARABLE_BY_DEFAULT
from exporters.onnx import min_input_side
from runtime.errors import EdgeDeeplabError
from runtime.files import path_error


# Default steps per head, chosen by time to accuracy (README, "Training"): with the default
# learning rate and warm-up, 1200 separable steps reach 0.774 mIoU (1000: 0.756, 1300: 0.784, on
# one 2-core AMD EPYC on torch's AVX2 paths; the earlier recipe needed 3200 steps for 0.763 on the
# same kind of CPU), about 15 minutes of `edge-deeplab pipeline`'s 20 on a 2-core AVX2-only CPU.
# The dense head gets the same training time: its step costs about 1 / 0.55 of a separable one,
# natively and on the AVX2 paths alike (benchmarks/train_step.py).
DEFAULT_ITERATIONS = {False: 660, True: 1200}
# The largest training crop: a full Cityscapes frame's width. Checked before anything is
# allocated: --crop-size 1000000 would otherwise ask numpy for 2.7 TiB for the first crop.
MAX_CROP = 2048
# What each numeric option may be, for the flags (their click type: the range shows in --help) and
# the YAML file alike (:func:`validate`). The crop's lower end also depends on the output stride.
OPTION_RANGES = {
    "width_mult": ranges.FiniteFloat(min=0, max=4, min_open=True),
    "iterations": ranges.at_least(1),
    "epochs": ranges.at_least(1),
    "batch_size": ranges.at_least(1),
    "crop_size": ranges.at_least(min_input_side(min(OUTPUT_STRIDES)), MAX_CROP),
    "lr": ranges.positive(),
    "momentum": ranges.FiniteFloat(min=0, max=1, max_open=True),
    "weight_decay": ranges.FiniteFloat(min=0),
    "poly_power": ranges.FiniteFloat(min=0),
    "warmup_steps": ranges.at_least(0),
    "seed": ranges.at_least(0, 2**32 - 1),  # numpy and torch both take any seed in this range
    "val_every": ranges.at_least(1),
    "val_images": ranges.at_least(1),
    "workers": ranges.at_least(0),
}


@dataclass
class TrainConfig:
    """Every training option. The defaults train the edge model on the built-in synthetic set
    in about 15 minutes on a 2-core AVX2 CPU (see README for the figures).

    ``separable`` and ``iterations`` left at None are resolved by :func:`make_config`: the
    backbone's default head (:data:`edge_deeplab.models.config.SEPARABLE_BY_DEFAULT`, the one
    ``ModelConfig`` also uses) and that head's step budget
    (:data:`DEFAULT_ITERATIONS`), so a saved configuration always says what was trained.
    """

    data: str = "synthetic"
    val_data: str | None = None  # default: the validation split of ``data``
    backbone: str = "mobilenetv2"
    width_mult: float = 1.0
    output_stride: int = 16
    decoder: bool = True
    separable: bool | None = None
    backbone_weights: str | None = None
    iterations: int | None = None
    epochs: int | None = None  # when set, overrides iterations
    batch_size: int = 8  # global: split across processes under torchrun
    crop_size: int = 128
    lr: float = 0.2  # with the warm-up: 0.70 mIoU after 400 steps, where 0.05 without one gave 0.45
    momentum: float = 0.9
    weight_decay: float = 4e-5
    poly_power: float = 0.9
    warmup_steps: int = 50  # linear learning-rate ramp before the poly decay
    seed: int = 0
    device: str = "cpu"
    amp: bool = True  # mixed precision, CUDA only
    val_every: int = 500  # two passes in a default run: validation costs about 5 % of it
    val_images: int | None = None  # cap on validation images (None: all)
    workers: int = 1
    out: str = "runs/default"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def load_yaml_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config and check its keys, so a typo is an error and not a silent default."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise path_error(exc, path, "read config") from None
    except UnicodeDecodeError as exc:
        raise EdgeDeeplabError(f"config {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                               f"{exc.start}); save it as UTF-8") from None
    except yaml.YAMLError as exc:
        raise EdgeDeeplabError(f"config {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise EdgeDeeplabError(f"config {path} must be a mapping of option: value")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(data) - set(TrainConfig.field_names()))
    if unknown:
        raise EdgeDeeplabError(f"config {path}: unknown option(s) {', '.join(unknown)}")
    return data


def make_config(file_values: dict[str, Any], flag_values: dict[str, Any]) -> TrainConfig:
    """Defaults < YAML file < flags (flags left at ``None`` do not override)."""
    check_types(file_values)
    merged = dict(file_values)
    merged.update({k: v for k, v in flag_values.items() if v is not None})
    try:
        config = TrainConfig(**merged)
    except TypeError as exc:
        raise EdgeDeeplabError(f"bad training option: {exc}") from None
    if config.separable is None:
        config.separable = SEPARABLE_BY_DEFAULT.get(config.backbone, False)
    if config.iterations is None:
        config.iterations = DEFAULT_ITERATIONS[bool(config.separable)]
    validate(config)
    return config


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def check_types(values: dict[str, Any]) -> None:
    """Check YAML values against the option types, so ``iterations: "eight"`` is one clear line.

    YAML gives whatever the file says (a string, a list); flags are already typed by the CLI.
    An integer is accepted for a float option (``lr: 1``) but a boolean is never a number.
    """
    hints = get_type_hints(TrainConfig)
    for name, value in values.items():
        if value is None:
            if type(None) in get_args(hints[name]):
                continue
            raise EdgeDeeplabError(f"config option {name} has no value; give one or remove the line")
        base = next(t for t in (get_args(hints[name]) or (hints[name],)) if t is not type(None))
        accepted = (int, float) if base is float else (base,)
        if isinstance(value, bool) != (base is bool) or not isinstance(value, accepted):
            raise EdgeDeeplabError(
                f"config option {name} must be {_TYPE_NAMES[base]}, not {type(value).__name__} {value!r:.60}"
            )


def validate(config: TrainConfig) -> None:
    """Reject impossible settings before any work starts (the flags' ranges also cover YAML values)."""
    from edge_deeplab.devices import check_device_name

    if config.output_stride not in OUTPUT_STRIDES:
        raise EdgeDeeplabError(f"output stride must be one of {', '.join(map(str, OUTPUT_STRIDES))}, not {config.output_stride}")
    for name, kind in OPTION_RANGES.items():
        if getattr(config, name) is not None:
            ranges.check(name, getattr(config, name), kind)
    smallest = min_input_side(config.output_stride)
    if config.crop_size < smallest:
        raise EdgeDeeplabError(f"crop-size {config.crop_size} is too small for output stride {config.output_stride}; "
                               f"use at least {smallest}")
    check_device_name(config.device)
