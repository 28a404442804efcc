"""Exporting a checkpoint's report combinations into bundles (the one step that needs torch).

One model built per output stride and one calibration set for every INT8 bundle (PTQ and QAT
alike, so a QAT row differs from its PTQ row by the fine-tuning alone); a combination
this machine cannot export, or whose export fails its own checks, becomes a skipped row with the
reason instead of stopping the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import util
from pathlib import Path
from typing import Any, Callable, Sequence

from calibration.ranges import DEFAULT_METHOD
from edge_deeplab.report.plan import Combination
from edge_deeplab.report.rows import Row, skipped_row
from runtime.errors import EdgeDeeplabError


@dataclass
class ExportSettings:
    """How the report's bundles are exported (one static input size for all, the calibration set, and
    ``--qat``'s steps, rate and training data for the QAT combinations)."""

    height: int
    width: int
    calib_data: str
    calib_images: int = 100
    calib_method: str = DEFAULT_METHOD
    calib_seed: int = 0
    max_drop: float | None = None
    qat_steps: int | None = None
    qat_lr: float | None = None
    qat_data: str | None = None  # None: each checkpoint's own training data


def export_bundles(
    ckpt,
    combos: Sequence[Combination],
    dest: Path,
    settings: ExportSettings,
    verify_samples: Sequence,
    log: Callable[[str], None],
    step: Callable[[str], None] = lambda message: None,
) -> tuple[list[tuple[Combination, Path]], list[Row]]:
    """Export each combination of ``ckpt`` (a loaded Checkpoint) into ``dest/<name>``.

    Returns the bundles written and the rows skipped.

    The model is built once per output stride and the calibration set chosen once, so every INT8
    bundle is calibrated on the same images. A combination this machine cannot build (OpenVINO not
    installed) or whose export fails its own checks is skipped with the reason.
    """
    from edge_deeplab.export import model_record, source_record
    from edge_deeplab.export_request import qat_input
    from edge_deeplab.metrics import miou_function
    from exporters.bundle import export_bundle
    from exporters.request import ExportRequest, ValidationInput

    checkpoint_path = Path(ckpt.path)
    calibration = None
    if any(c.precision == "int8" for c in combos):
        calibration = _calibration_input(settings, ckpt, log)
    qat = None
    if any(c.qat for c in combos):
        qat = qat_input(ckpt, settings.qat_steps, settings.qat_lr, settings.qat_data)
    validation = None
    if settings.max_drop is not None:
        validation = ValidationInput(verify_samples, list(range(len(verify_samples))), "report validation images",
                                     miou_function(ckpt.num_classes, ckpt.ignore_index))
    source = source_record(checkpoint_path, ckpt)
    config = ckpt.model_config
    written: list[tuple[Combination, Path]] = []
    skipped: list[Row] = []
    models: dict[int, Any] = {}
    for combo in combos:
        step(f"export {combo.name}")
        reason = _export_unavailable(combo)
        if reason:
            skipped.append(skipped_row(combo, reason))
            continue
        if combo.output_stride not in models:
            models = {combo.output_stride: ckpt.build_model(combo.output_stride)}  # one stride in memory at a time
        out = dest / combo.name
        log(f"== {combo.name}")
        request = ExportRequest(
            model=models[combo.output_stride], target=combo.target, precision=combo.precision, out=out,
            height=settings.height, width=settings.width, classes=list(ckpt.classes),
            palette=[list(c) for c in ckpt.palette], mean=list(ckpt.mean), std=list(ckpt.std),
            verify_samples=list(verify_samples[:4]), ignore_index=ckpt.ignore_index,
            model_info=model_record(config, combo.output_stride),
            source=source, calibration=calibration if combo.precision == "int8" else None,
            validation=validation if combo.precision == "int8" else None,
            max_drop=settings.max_drop if combo.precision == "int8" else None, qat=qat if combo.qat else None,
            log=log,
        )
        try:
            export_bundle(request)
        except EdgeDeeplabError as exc:
            log(f"   export failed: {exc}")
            skipped.append(skipped_row(combo, f"export failed: {exc}"))
            continue
        written.append((combo, out))
    return written, skipped


def _export_unavailable(combo: Combination) -> str | None:
    if combo.target == "openvino":
        if util.find_spec("openvino") is None:
            return "cannot export: openvino is not installed here (pip install 'edge-deeplab[openvino]')"
        if combo.precision == "int8" and util.find_spec("nncf") is None:
            return "cannot export: nncf is not installed here (pip install 'edge-deeplab[openvino]')"
    return None


def _calibration_input(settings: ExportSettings, ckpt, log: Callable[[str], None]):
    """The calibration set: a dataset spec (train split) or a folder of plain images."""
    from calibration.selection import select_calibration_set
    from edge_deeplab.export import check_classes, open_calibration
    from exporters.request import CalibrationInput

    dataset = open_calibration(settings.calib_data)
    check_classes(dataset, settings.calib_data, ckpt.classes)
    log(f"choosing {settings.calib_images} calibration images from {settings.calib_data}")
    chosen = select_calibration_set(dataset, settings.calib_images, ckpt.num_classes, ckpt.ignore_index,
                                    seed=settings.calib_seed)
    return CalibrationInput(dataset, chosen, settings.calib_data, settings.calib_method)
