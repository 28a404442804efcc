"""What the commands' options may take, built from the tables that define each fact.

The output strides come from :mod:`edge_deeplab.models.config`, the targets, precisions and
outputs from :mod:`runtime.manifest`, the calibration methods from :mod:`calibration.ranges`, the
runtime knobs from :mod:`runtime.options`: this module only turns those tables into the Enums
typer shows as ``[a|b|c]`` in ``--help`` and checks, so a new target or stride is added in one
place. It also holds the runtime knobs ``infer``, ``benchmark`` and ``doctor`` share, each defined
once with the runtime's own default (:data:`RUNTIME_DEFAULTS`); the report settings ``report`` and
``pipeline`` share live in :mod:`edge_deeplab.commands.report`.

Torch-free and cheap to import: every command module loads it (``edge-deeplab --help`` loads none).
"""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional, Sequence

import typer

from calibration.ranges import METHODS
from edge_deeplab.models.config import BACKBONES, OUTPUT_STRIDES
from runtime.errors import EdgeDeeplabError
from runtime.manifest import OUTPUT_CHOICES, PRECISIONS, TARGETS
from runtime.options import OV_PERFORMANCE_HINTS, OV_PRECISION_HINTS, ORT_OPT_LEVELS, UPSAMPLE_MODES, RuntimeOptions


def choices(name: str, values: Sequence[object]) -> type[Enum]:
    """A str Enum whose members are ``values`` (as text), in their table's order."""
    return Enum(name, {str(v): str(v) for v in values}, type=str)


Target = choices("Target", TARGETS)
Precision = choices("Precision", PRECISIONS)
OutputStride = choices("OutputStride", OUTPUT_STRIDES)
CalibMethod = choices("CalibMethod", METHODS)
Outputs = choices("Outputs", tuple(OUTPUT_CHOICES))
Backbone = choices("Backbone", BACKBONES)
Upsample = choices("Upsample", UPSAMPLE_MODES)
OrtOptimization = choices("OrtOptimization", ORT_OPT_LEVELS)
OvPrecision = choices("OvPrecision", OV_PRECISION_HINTS)
OvHint = choices("OvHint", OV_PERFORMANCE_HINTS)


def value(choice: Enum | None) -> str | None:
    """The text of a choice, None when the option was not given."""
    return None if choice is None else choice.value


def stride(choice: Enum | None) -> int | None:
    """An output-stride choice as the int the model takes."""
    return None if choice is None else int(choice.value)


def parse_size(text: str) -> tuple[int, int]:
    """``513x513`` or ``513`` -> (height, width)."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", text)
    if not match:
        raise typer.BadParameter(f"input size must be HxW or N (e.g. 513x513), got {text!r}")
    height = int(match.group(1))
    return height, int(match.group(2) or height)


def size_option(text: str | None) -> tuple[int, int] | None:
    """An ``--input-size`` callback: the (height, width) given, None when not given."""
    return parse_size(text) if text else None


def parse_list(text: str, allowed: Sequence[object], flag: str) -> list[str]:
    """``8,16`` -> ['8', '16'], each checked against ``allowed``, each once, in the order given."""
    items = list(dict.fromkeys(item.strip() for item in text.split(",") if item.strip()))
    names = [str(a) for a in allowed]
    bad = [item for item in items if item not in names]
    if bad or not items:
        raise typer.BadParameter(f"{', '.join(bad) or 'nothing'}: choose from {', '.join(names)} (comma-separated)",
                                 param_hint=flag)
    return items


def parse_widths(text: str) -> tuple[int, ...]:
    """``2,4,8`` -> the trimap band widths (pixels) of boundary mIoU, each positive."""
    try:
        widths = tuple(int(w) for w in text.split(",") if w.strip())
    except ValueError:
        raise EdgeDeeplabError(f"--band-widths must be integers separated by commas, not {text!r}") from None
    if not widths or min(widths) <= 0:
        raise EdgeDeeplabError("--band-widths needs at least one positive width")
    return widths


def listed(values: Sequence[object]) -> str:
    """How a list option's default and choices read in --help: ``8,16,32``."""
    return ",".join(str(v) for v in values)


# --- options several commands share -------------------------------------------------------------

RUNTIME_PANEL = "Runtime options"
RUNTIME_DEFAULTS = RuntimeOptions()  # what runtime.load does unless told otherwise: the flags' defaults
Threads = Annotated[int, typer.Option(min=0, help="intra-op threads (0: the backend decides)",
                                      rich_help_panel=RUNTIME_PANEL)]
OrtOptimizationOpt = Annotated[OrtOptimization, typer.Option("--ort-optimization",
                                                             help="ONNX Runtime graph optimization level",
                                                             rich_help_panel=RUNTIME_PANEL)]
OvPrecisionOpt = Annotated[Optional[OvPrecision], typer.Option(
    "--ov-precision", show_default="f32 for fp32 bundles, OpenVINO's own otherwise",
    help="OpenVINO INFERENCE_PRECISION_HINT", rich_help_panel=RUNTIME_PANEL)]
OvHintOpt = Annotated[OvHint, typer.Option("--ov-hint", help="OpenVINO PERFORMANCE_HINT",
                                           rich_help_panel=RUNTIME_PANEL)]
OvDevice = Annotated[str, typer.Option("--device", help="OpenVINO device (CPU, GPU, NPU, AUTO)",
                                       rich_help_panel=RUNTIME_PANEL)]
EngineCache = Annotated[Optional[Path], typer.Option(
    "--engine-cache", show_default="BUNDLE/engines",
    help="folder for TensorRT engines built on this device", rich_help_panel=RUNTIME_PANEL)]


def runtime_options(threads: int, ort_optimization: Enum, ov_precision: Enum | None, ov_hint: Enum,
                    device: str, engine_cache: Path | None) -> dict:
    """The ``runtime.load`` keywords for the runtime options above."""
    return {"threads": threads, "ort_optimization": ort_optimization.value, "ov_precision_hint": value(ov_precision),
            "ov_performance_hint": ov_hint.value, "device": device, "engine_cache_dir": engine_cache}
