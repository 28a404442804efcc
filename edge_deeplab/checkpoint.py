"""Checkpoints: one file holds the weights and everything needed to use them without guessing.

A checkpoint is a plain dict saved with ``torch.save`` and loaded with ``weights_only=True`` (no
pickled code runs on load): the model config, the state dict, class names, palette, ignore index
and normalization, and, for ``--resume``, the optimizer, the step and the RNG states. Files are
written atomically, so a run killed while saving leaves the previous checkpoint intact.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_deeplab.models.config import ModelConfig, separable_before_v2
from runtime.errors import EdgeDeeplabError
from runtime.files import atomic_file

FORMAT = "edge-deeplab-checkpoint"
# 2: the model config's ``separable`` is always true or false; format 1 could hold null, which
# meant dense except for Xception-65 (read so still).
FORMAT_VERSION = 2


@dataclass
class Checkpoint:
    """What a checkpoint file holds, with the model config parsed."""

    model_config: ModelConfig
    state_dict: dict[str, Any]
    classes: list[str]
    palette: list[list[int]]
    mean: list[float]
    std: list[float]
    ignore_index: int = 255
    dataset: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    train_state: dict[str, Any] | None = None  # step, optimizer, rng, best metric, train config
    # The input size (height, width) the checkpoint's recorded mIoU was measured at: the largest
    # validation image for a trained run, the dataset's usual evaluation size for an imported one.
    # ``export`` builds bundles at this size by default, so a bundle keeps the checkpoint's mIoU.
    eval_input_size: list[int] | None = None
    path: Path | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model_config": self.model_config.to_dict(),
            "state_dict": self.state_dict,
            "classes": list(self.classes),
            "palette": [list(map(int, c)) for c in self.palette],
            "mean": list(map(float, self.mean)),
            "std": list(map(float, self.std)),
            "ignore_index": int(self.ignore_index),
            "dataset": self.dataset,
            "metrics": self.metrics,
            "train_state": self.train_state,
            "eval_input_size": None if self.eval_input_size is None else [int(v) for v in self.eval_input_size],
        }

    def build_model(self, output_stride: int | None = None):
        """Build the model this checkpoint describes and load its weights (strict).

        ``output_stride`` runs the same weights at another stride (the design's switch).
        """
        from edge_deeplab.models import build_model, set_output_stride

        model = build_model(self.model_config)
        check_state_dict(model.state_dict(), self.state_dict, f"{self.path or 'checkpoint'}")
        try:
            model.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0] if str(exc) else "mismatch"
            raise EdgeDeeplabError(
                f"{self.path or 'checkpoint'}: weights do not fit a {self.model_config.backbone} model "
                f"with {self.num_classes} classes ({first})"
            ) from None
        if output_stride is not None:
            set_output_stride(model, output_stride)
        model.eval()
        return model


def check_state_dict(expected: dict[str, Any], given: dict[str, Any], where: str) -> None:
    """Name the first tensor whose shape differs, with both shapes, or the first missing/extra key.

    torch's own message starts with "Error(s) in loading state_dict" and lists the tensors on the
    lines below, which a one-line error would cut off.
    """
    for name, tensor in expected.items():
        if name not in given:
            raise EdgeDeeplabError(f"{where}: weights have no tensor {name} ({len(given)} tensors given, {len(expected)} expected)")
        shape = tuple(getattr(given[name], "shape", ()))
        if shape != tuple(tensor.shape):
            raise EdgeDeeplabError(
                f"{where}: tensor {name} has shape {list(shape)} in the checkpoint, the model needs {list(tensor.shape)}"
            )
    extra = sorted(set(given) - set(expected))
    if extra:
        raise EdgeDeeplabError(f"{where}: weights hold {len(extra)} tensor(s) the model does not have, e.g. {extra[0]}")


def save_checkpoint(checkpoint: Checkpoint, path: str | Path) -> Path:
    """Write atomically: a crash mid-write leaves the old file as it was."""
    import torch

    path = Path(path)
    with atomic_file(path) as tmp:
        try:
            torch.save(checkpoint.to_dict(), tmp)
        except RuntimeError as exc:
            # torch's zip writer reports a failed write (a full disk) as "enforce fail ... unexpected
            # pos", without the OS error: say what was being written and how much room is left.
            free_mb = shutil.disk_usage(tmp.parent).free / 1e6
            raise EdgeDeeplabError(
                f"cannot write checkpoint {path} ({str(exc).strip().splitlines()[0][:120]}); "
                f"{free_mb:.1f} MB free on its disk"
            ) from None
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load and validate a checkpoint, turning every way it can be wrong into one clear line."""
    from edge_deeplab.torch_files import load_torch_file

    path = Path(path)
    data = load_torch_file(path, "checkpoint")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        hint = ""
        if isinstance(data, dict) and "model_state" in data:
            hint = " (it looks like a VainF/DeepLabV3Plus-Pytorch checkpoint: convert it with 'edge-deeplab import-checkpoint')"
        raise EdgeDeeplabError(f"{path} is not an edge-deeplab checkpoint{hint}")
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise EdgeDeeplabError(f"{path} has checkpoint format version {version}; this edge-deeplab reads up to {FORMAT_VERSION}")
    try:
        ckpt = Checkpoint(
            model_config=_model_config(data["model_config"], version),
            state_dict=data["state_dict"],
            classes=list(data["classes"]),
            palette=[list(c) for c in data["palette"]],
            mean=list(data["mean"]),
            std=list(data["std"]),
            ignore_index=int(data.get("ignore_index", 255)),
            dataset=str(data.get("dataset", "")),
            metrics=dict(data.get("metrics") or {}),
            train_state=data.get("train_state"),
            eval_input_size=_size_or_none(data.get("eval_input_size")),
            path=path,
        )
    except (KeyError, TypeError) as exc:
        raise EdgeDeeplabError(f"{path} is an incomplete edge-deeplab checkpoint (missing {exc})") from None
    if ckpt.model_config.num_classes != len(ckpt.classes):
        raise EdgeDeeplabError(
            f"{path}: model has {ckpt.model_config.num_classes} classes but names {len(ckpt.classes)}"
        )
    return ckpt


def _model_config(data: Any, version: int) -> ModelConfig:
    """The stored model config; a format-1 ``separable: null`` keeps the head it meant then."""
    if version < 2 and isinstance(data, dict) and data.get("separable") is None:
        data = {**data, "separable": separable_before_v2(str(data.get("backbone")))}
    return ModelConfig.from_dict(data)


def _size_or_none(value: Any) -> list[int] | None:
    """A recorded [height, width], or None when absent (checkpoints written before it was recorded)."""
    if value is None:
        return None
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value)):
        raise TypeError(f"eval_input_size {value!r}")
    return [int(v) for v in value]
