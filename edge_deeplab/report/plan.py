"""What a report is about: the (output stride, target, precision, PTQ/QAT) combinations, and the names.

Everything decided before any export or measurement: which combinations a request means
(:func:`plan_combinations`), which bundles a folder holds (:func:`find_bundles`), whether this
machine can run a target at all (:func:`runtime_unavailable`), and the labels that tell several
checkpoints apart in one report (:func:`model_labels`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from importlib import util
from pathlib import Path
from typing import Any, Iterable, Sequence

from edge_deeplab.models.config import OUTPUT_STRIDES
from runtime.errors import EdgeDeeplabError
from runtime.manifest import MANIFEST_NAME, PRECISIONS, TARGET_BACKEND, TARGET_PRECISIONS, TARGETS

# What each backend needs importable here (TensorRT also needs cuda-python to run anything).
_BACKEND_MODULES = {"onnxruntime": ("onnxruntime",), "openvino": ("openvino",), "tensorrt": ("tensorrt", "cuda")}


@dataclass(frozen=True)
class Combination:
    """One report row's identity: the output stride the model runs at, the target, the precision and,
    for INT8, whether the weights were fine-tuned with quantization in the loop (QAT) or not (PTQ)."""

    output_stride: int
    target: str
    precision: str
    label: str = ""  # shown instead of the generated name (two bundles of one combination)
    model: str = ""  # which checkpoint, when a report compares several (see model_labels)
    qat: bool = False

    @property
    def name(self) -> str:
        prefix = f"{slug(self.model)}-" if self.model else ""
        suffix = "-qat" if self.qat else ""
        return self.label or f"{prefix}os{self.output_stride}-{self.target}-{self.precision}{suffix}"


def quant_label(precision: str, qat: bool) -> str:
    """How an INT8 row was quantized, PTQ or QAT (the table's and the CSV's ``quant``); "" for float rows."""
    if precision != "int8":
        return ""
    return "QAT" if qat else "PTQ"


def slug(text: str) -> str:
    """``mobilenetv2 separable`` -> ``mobilenetv2-separable``: a model label as a folder-name part."""
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def plan_combinations(strides: Iterable[int], targets: Iterable[str], precisions: Iterable[str],
                      qat: bool = False) -> list[Combination]:
    """Every valid (stride, target, precision), in table order; with ``qat``, each INT8 one twice,
    PTQ then QAT, side by side so the table shows what the fine-tuning bought.

    Pairs the design's target table does not offer (``onnx`` int8: that is the ``onnxruntime``
    target; ``onnxruntime`` fp32) are left out, so ``--targets onnx,onnxruntime --precisions
    fp32,int8`` means what a user expects.
    """
    strides, targets, precisions = list(strides), list(targets), list(precisions)
    for stride in strides:
        if stride not in OUTPUT_STRIDES:
            raise EdgeDeeplabError(f"output stride must be {', '.join(map(str, OUTPUT_STRIDES[:-1]))} or "
                                   f"{OUTPUT_STRIDES[-1]}, not {stride}")
    for target in targets:
        if target not in TARGETS:
            raise EdgeDeeplabError(f"unknown target {target!r}; choose from {', '.join(TARGETS)}")
    for precision in precisions:
        if precision not in PRECISIONS:
            raise EdgeDeeplabError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    combos = [
        Combination(s, t, p, qat=tuned)
        for s in sorted(set(strides))
        for t in TARGETS if t in targets
        for p in PRECISIONS if p in precisions and p in TARGET_PRECISIONS[t]
        for tuned in ((False, True) if qat and p == "int8" else (False,))
    ]
    if not combos:
        raise EdgeDeeplabError(
            f"no target offers the precisions {', '.join(precisions)}: "
            + "; ".join(f"{t}: {', '.join(TARGET_PRECISIONS[t])}" for t in targets)
        )
    return combos


def runtime_unavailable(target: str) -> str | None:
    """Why bundles of ``target`` cannot be run on this machine, or None when they can."""
    backend = TARGET_BACKEND[target]
    missing = [m for m in _BACKEND_MODULES[backend] if util.find_spec(m) is None]
    if not missing:
        return None
    if backend == "tensorrt":
        return "TensorRT is not importable here (it runs on the Jetson: pip install 'edge-deeplab[tensorrt]' there)"
    return f"{missing[0]} is not installed here (pip install 'edge-deeplab[{backend}]')"


def find_bundles(folder: Path) -> list[tuple[Combination, Path]]:
    """Every bundle in ``folder`` (its subfolders with a model.json, or the folder itself), named by
    folder and sorted in table order."""
    from runtime.manifest import read_manifest

    if not folder.is_dir():
        raise EdgeDeeplabError(f"--bundles {folder} is not a directory")
    candidates = [folder] if (folder / MANIFEST_NAME).is_file() else sorted(
        p for p in folder.iterdir() if (p / MANIFEST_NAME).is_file())
    if not candidates:
        raise EdgeDeeplabError(f"{folder} holds no bundle (no subfolder with a {MANIFEST_NAME})")
    found = []
    for path in candidates:
        manifest = read_manifest(path, verify_files=False)  # runtime.load verifies the checksums
        stride = manifest.model.get("output_stride")
        qat = "qat" in (manifest.calibration or {})  # exported with --qat: a QAT row
        found.append((Combination(int(stride) if stride else 0, manifest.target, manifest.precision, qat=qat), path))
    order = {(t, p): i for i, (t, p) in enumerate((t, p) for t in TARGETS for p in PRECISIONS)}
    found.sort(key=lambda item: (item[0].output_stride, order[(item[0].target, item[0].precision)], item[0].qat,
                                 item[1].name))
    names: dict[str, int] = {}
    for combo, path in found:
        names[combo.name] = names.get(combo.name, 0) + 1
    # Two bundles of the same combination keep their folder names, so neither row hides the other.
    return [(combo if names[combo.name] == 1 else replace(combo, label=path.name), path) for combo, path in found]


def model_labels(checkpoints: Sequence[Any]) -> list[str]:
    """Names that tell checkpoints apart in one report: backbone and head first, then whatever else
    differs in their training options (``1600 steps``), then, if still equal, the file name."""
    def head(ckpt) -> str:
        c = ckpt.model_config
        name = c.backbone if c.width_mult == 1 else f"{c.backbone} x{c.width_mult:g}"
        return f"{name} {'separable' if c.use_separable else 'dense'}" + ("" if c.decoder else " no-decoder")

    labels = [head(c) for c in checkpoints]
    if len(set(labels)) < len(labels):
        configs = [dict((c.train_state or {}).get("config") or {}) for c in checkpoints]
        ignored = {"out", "workers", "device", "val_every", "val_images", "separable", "decoder", "backbone"}
        keys = sorted({k for cfg in configs for k in cfg if k not in ignored
                       and len({json.dumps(cfg.get(k), default=str) for cfg in configs}) > 1})
        labels = [label + "".join(f" {_option(k, cfg.get(k))}" for k in keys) for label, cfg in zip(labels, configs)]
    if len(set(labels)) < len(labels):
        labels = [f"{label} ({Path(c.path).stem})" for label, c in zip(labels, checkpoints)]
    return labels


def _option(key: str, value: Any) -> str:
    return f"{value} steps" if key == "iterations" else f"{key.replace('_', '-')} {value}"
