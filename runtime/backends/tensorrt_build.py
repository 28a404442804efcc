"""The one way edge-deeplab builds a TensorRT engine, and the ``trtexec`` line that does the same.

Three places need an engine: the exporter (where TensorRT is installed), the runtime (first load
on a device) and a user typing the command from the bundle's README. They all start from one
:class:`BuildSettings` (precision flags, workspace limit, optimization profile), so an engine
built by any of them is built the same way. The settings are recorded in the manifest
(``extra["tensorrt_build"]`` and ``extra["tensorrt_profile"]``) and read back by the runtime.

Plain Python at import: ``tensorrt`` is imported only by :func:`build_engine` and
:func:`trt_logger`, so settings, commands and cache decisions are tested on machines without it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.errors import BundleError, EdgeDeeplabError
from runtime.files import atomic_write_bytes
from runtime.manifest import TARGET_PRECISIONS, Manifest

# Builder workspace limit. TensorRT's own default is the whole device memory, which on a Jetson is
# the memory the CPU shares; 1 GiB leaves room for the application and suits a DeepLab-sized net.
DEFAULT_WORKSPACE_MB = 1024
ENGINE_NAME = "model.engine"
TIMING_CACHE_NAME = "timing.cache"

Shape = tuple[int, ...]


@dataclass(frozen=True)
class BuildSettings:
    """How an engine is built.

    ``profile`` is the (min, opt, max) NCHW shapes of the optimization profile, or ``None`` for a
    static input (the ONNX's own shape). ``fp16_with_int8`` lets layers an INT8 (Q/DQ) network
    leaves in float run in FP16 instead of FP32: the Q/DQ pairs decide what is INT8, the flag only
    widens the choice for the rest.
    """

    precision: str
    input_name: str
    profile: tuple[Shape, Shape, Shape] | None = None
    workspace_mb: int = DEFAULT_WORKSPACE_MB
    fp16_with_int8: bool = True

    def __post_init__(self) -> None:
        if self.precision not in TARGET_PRECISIONS["tensorrt"]:
            raise EdgeDeeplabError(f"unknown TensorRT precision {self.precision!r}")
        if self.workspace_mb <= 0:
            raise EdgeDeeplabError(f"TensorRT workspace must be positive, got {self.workspace_mb} MiB")

    def builder_flags(self) -> list[str]:
        """Names of the ``tensorrt.BuilderFlag`` members to set (trtexec spells them --fp16 --int8)."""
        if self.precision == "fp16":
            return ["FP16"]
        if self.precision == "int8":
            return ["INT8", "FP16"] if self.fp16_with_int8 else ["INT8"]
        return []

    def trtexec_args(self, onnx_name: str, engine_name: str = ENGINE_NAME,
                     timing_cache_name: str = TIMING_CACHE_NAME) -> list[str]:
        """The trtexec argument list for the same build (run in the bundle's folder)."""
        args = ["trtexec", f"--onnx={onnx_name}", f"--saveEngine={engine_name}",
                f"--timingCacheFile={timing_cache_name}", f"--memPoolSize=workspace:{self.workspace_mb}M"]
        args += [f"--{flag.lower()}" for flag in self.builder_flags()]
        if self.profile is not None:
            for which, shape in zip(("min", "opt", "max"), self.profile):
                args.append(f"--{which}Shapes={self.input_name}:{'x'.join(map(str, shape))}")
        return args

    def trtexec_command(self, onnx_name: str) -> str:
        return shlex.join(self.trtexec_args(onnx_name))

    def record(self) -> dict[str, Any]:
        """What the manifest keeps in ``extra["tensorrt_build"]`` (the profile has its own key)."""
        return {"builder_flags": self.builder_flags(), "workspace_mb": self.workspace_mb,
                "fp16_with_int8": self.fp16_with_int8}

    def key(self) -> str:
        """A short digest of everything that changes the engine, for the engine cache's file names."""
        text = json.dumps([self.precision, self.input_name, self.profile, self.workspace_mb, self.fp16_with_int8])
        return hashlib.sha256(text.encode()).hexdigest()[:8]


def bundle_settings(manifest: Manifest, profile: tuple[Shape, Shape, Shape] | None,
                    workspace_mb: int | None = None, fp16_with_int8: bool | None = None) -> BuildSettings:
    """The settings to build a bundle's engine with: the exporter's recorded ones, unless overridden.

    ``None`` for an override means "as recorded" (and, for a bundle that recorded nothing, the
    defaults the exporter uses), so the engine built on first load equals the bundle's trtexec line.
    """
    recorded = manifest.extra.get("tensorrt_build") or {}
    if not isinstance(recorded, dict):
        raise BundleError(f"manifest extra.tensorrt_build is not an object: {recorded!r}")
    return BuildSettings(
        precision=manifest.precision,
        input_name=manifest.input.name,
        profile=profile,
        workspace_mb=int(workspace_mb if workspace_mb is not None else recorded.get("workspace_mb", DEFAULT_WORKSPACE_MB)),
        fp16_with_int8=bool(fp16_with_int8 if fp16_with_int8 is not None else recorded.get("fp16_with_int8", True)),
    )


@functools.lru_cache(maxsize=1)
def trt_logger() -> Any:
    """One TensorRT logger per process: TensorRT warns when builders and runtimes get different ones."""
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


def build_engine(onnx_path: Path, settings: BuildSettings, timing_cache: Path) -> bytes:
    """Parse the ONNX, build a serialized engine with ``settings`` and update the timing cache.

    The timing cache (kernel timings of earlier builds on this GPU) makes a rebuild take seconds
    instead of minutes; it is written atomically next to the engines.
    """
    import tensorrt as trt

    builder = trt.Builder(trt_logger())
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, trt_logger())
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BundleError(f"{onnx_path}: TensorRT cannot parse it ({errors[0] if errors else 'unknown error'})")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mb << 20)
    for flag in settings.builder_flags():
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if settings.profile is not None:
        profile = builder.create_optimization_profile()
        profile.set_shape(settings.input_name, *settings.profile)
        config.add_optimization_profile(profile)
    blob = timing_cache.read_bytes() if timing_cache.is_file() else b""
    config.set_timing_cache(config.create_timing_cache(blob), False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EdgeDeeplabError(f"TensorRT could not build an engine from {onnx_path} (see the TensorRT log above)")
    atomic_write_bytes(timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(serialized))
