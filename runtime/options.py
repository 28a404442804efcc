"""Options for running a bundle, with defaults that suit an edge device.

``runtime.load(bundle, **options)`` accepts these as keyword arguments; an unknown name or a bad
value is a user error (one line), not a silent no-op, because a misspelt ``thread=2`` that is
ignored would make a benchmark row lie about its setup.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from runtime.errors import EdgeDeeplabError

ORT_OPT_LEVELS = ("disable", "basic", "extended", "all")
OV_PRECISION_HINTS = ("f32", "f16", "bf16")
OV_PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT")
UPSAMPLE_MODES = ("mask", "logits")


@dataclass(frozen=True)
class RuntimeOptions:
    """Every knob the runtime exposes.

    ``threads``: intra-op threads (0 = the backend's own choice, usually one per core).
    ``ort_optimization``: ONNX Runtime graph optimization level.
    ``ort_spinning``: let ONNX Runtime's worker threads busy-wait between calls. Off by default:
    the spinning threads compete with the runtime's own pre/post-processing (and the video
    pipeline's decode/encode threads) for the cores; on the 2-core development machine turning it
    off made ``predict`` on a small INT8 model 2.7x faster (20.6 -> 7.6 ms at 513x513).
    ``ov_precision_hint``: OpenVINO INFERENCE_PRECISION_HINT. ``None`` means: ``f32`` for fp32
    bundles (OpenVINO would otherwise run bf16 on CPUs with AMX/AVX512-BF16, and an "FP32" row must
    be true FP32) and OpenVINO's own default for fp16/int8 bundles.
    ``ov_performance_hint``: LATENCY (one image at a time, the robot case) or THROUGHPUT.
    ``device``: OpenVINO device name (CPU, GPU, NPU, AUTO).
    ``upsample``: ``mask`` takes the argmax at model resolution and resizes the class mask
    (nearest; cheap), ``logits`` resizes the logits bilinearly first (smoother edges when the model
    ran smaller than the image; costs C times more).
    ``pad_multiple``: for dynamic-shape bundles, pad height/width up to a multiple of this (1 = run
    at the image's exact size, the default: the result is then exactly what the exported graph
    computes for that image, as in evaluation).
    ``engine_cache_dir``: where TensorRT engines built on this device are kept (default: the
    bundle's ``engines/`` folder, or ``~/.cache/edge-deeplab/engines`` if that is read-only).
    ``trt_workspace_mb``: TensorRT builder workspace limit; ``None``: the bundle's recorded one.
    ``trt_fp16_with_int8``: also allow FP16 kernels for layers an INT8 bundle left unquantized;
    ``None``: as the bundle records (on, as its trtexec line says ``--int8 --fp16``). With both
    left at ``None``, an engine built here equals one built by hand with the bundle's command
    (:mod:`runtime.backends.tensorrt_build`).
    ``trt_max_size``: largest height/width of the optimization profile for dynamic bundles whose
    manifest records no ``extra["tensorrt_profile"]`` (larger images are shrunk to fit, keeping
    their aspect ratio).
    """

    threads: int = 0
    ort_optimization: str = "all"
    ort_spinning: bool = False
    ov_precision_hint: str | None = None
    ov_performance_hint: str = "LATENCY"
    device: str = "CPU"
    upsample: str = "mask"
    pad_multiple: int = 1
    engine_cache_dir: Path | None = None
    trt_workspace_mb: int | None = None
    trt_fp16_with_int8: bool | None = None
    trt_max_size: int = 1024

    def __post_init__(self) -> None:
        checks = [
            (self.threads >= 0, f"threads must be >= 0, got {self.threads}"),
            (self.ort_optimization in ORT_OPT_LEVELS, f"ort_optimization must be one of {ORT_OPT_LEVELS}"),
            (
                self.ov_precision_hint is None or self.ov_precision_hint in OV_PRECISION_HINTS,
                f"ov_precision_hint must be one of {OV_PRECISION_HINTS}",
            ),
            (
                self.ov_performance_hint in OV_PERFORMANCE_HINTS,
                f"ov_performance_hint must be one of {OV_PERFORMANCE_HINTS}",
            ),
            (self.upsample in UPSAMPLE_MODES, f"upsample must be one of {UPSAMPLE_MODES}"),
            (self.pad_multiple >= 1, f"pad_multiple must be >= 1, got {self.pad_multiple}"),
            (self.trt_workspace_mb is None or self.trt_workspace_mb > 0, "trt_workspace_mb must be positive"),
            (self.trt_max_size >= 32, "trt_max_size must be at least 32"),
        ]
        for ok, message in checks:
            if not ok:
                raise EdgeDeeplabError(message)

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "RuntimeOptions":
        """Build options from ``load()`` keywords, rejecting names that do not exist."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise EdgeDeeplabError(f"unknown runtime option(s) {unknown}; known: {sorted(known)}")
        if kwargs.get("engine_cache_dir") is not None:
            kwargs["engine_cache_dir"] = Path(kwargs["engine_cache_dir"])
        if isinstance(kwargs.get("ov_performance_hint"), str):
            kwargs["ov_performance_hint"] = kwargs["ov_performance_hint"].upper()
        return cls(**kwargs)
