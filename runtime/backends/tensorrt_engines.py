"""Which TensorRT engine to run, where engines are cached and what profile they are built with.

An engine only runs on the GPU model and TensorRT version that built it, so engines are cached
under a name made of the GPU's name, its compute capability and the TensorRT version (plus the
precision, the ONNX file's checksum and a digest of the build settings, so a re-exported bundle
or a changed profile never picks up a stale engine). An engine shipped in a bundle is used only
when the manifest says it was built for this GPU and TensorRT; otherwise it is rebuilt here, with
one line saying why, instead of TensorRT failing to deserialize it. This module is plain Python
with no TensorRT import: the decisions are tested on machines that have no GPU.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from runtime.backends.tensorrt_build import BuildSettings
from runtime.errors import BundleError
from runtime.files import sha256_file
from runtime.manifest import Manifest

# Largest batch a dynamic-batch engine accepts; segmentation on a device runs 1-4 frames at once.
MAX_BATCH = 8
# Smallest and typical input side for dynamic-size engines (DeepLab needs >= 32 px at OS 32).
MIN_SIDE = 32
OPT_SIDE = 512


@dataclass(frozen=True)
class DeviceIdentity:
    """The facts an engine is tied to: GPU name, compute capability ("8.7") and TensorRT version."""

    gpu_name: str
    compute_capability: str
    tensorrt_version: str

    def slug(self) -> str:
        gpu = re.sub(r"[^a-z0-9]+", "-", self.gpu_name.lower()).strip("-") or "gpu"
        return f"{gpu}-sm{self.compute_capability.replace('.', '')}-trt{self.tensorrt_version}"

    def describe(self) -> str:
        return f"{self.gpu_name} (sm {self.compute_capability}, TensorRT {self.tensorrt_version})"

    def as_dict(self) -> dict[str, str]:
        return {
            "gpu_name": self.gpu_name,
            "compute_capability": self.compute_capability,
            "tensorrt_version": self.tensorrt_version,
        }


@dataclass
class EnginePlan:
    """Engines to try in order, and where to build one if none of them deserializes."""

    candidates: list[Path]
    build_path: Path | None
    onnx_path: Path | None
    timing_cache_path: Path
    notes: list[str] = field(default_factory=list)

    def build_message(self, identity: DeviceIdentity) -> str:
        """The one line printed before a build: for which device, from what, and why."""
        why = "; ".join(self.notes) or "no engine for it yet"
        return (f"building a TensorRT engine for {identity.describe()} from {self.onnx_path.name} "
                f"({why}); it is cached as {self.build_path}")

    def failure(self, identity: DeviceIdentity) -> BundleError:
        """The error when nothing loads and nothing can be built."""
        why = "; ".join(self.notes) or "no engine in the bundle"
        return BundleError(
            f"no usable TensorRT engine for {identity.describe()}: {why}, and the bundle has no ONNX model to "
            "build one from; re-export the bundle with its ONNX or build the engine on this device"
        )


def default_cache_dir(bundle_dir: Path) -> Path:
    """The bundle's ``engines/`` folder, or a per-user cache when the bundle is read-only."""
    if os.access(bundle_dir, os.W_OK):
        return bundle_dir / "engines"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "edge-deeplab" / "engines" / bundle_dir.resolve().name


def engine_file_name(identity: DeviceIdentity, settings: BuildSettings, onnx_sha256: str) -> str:
    """The cache key: device identity, precision, the ONNX's checksum and the build settings' digest."""
    return f"{identity.slug()}-{settings.precision}-{onnx_sha256[:12]}-{settings.key()}.engine"


def plan_engine(manifest: Manifest, bundle_dir: Path, identity: DeviceIdentity, cache_dir: Path,
                settings: BuildSettings) -> EnginePlan:
    """Decide which engine files to try and whether an engine can be (re)built here.

    Order: an engine shipped in the bundle (``files["engine"]``) when the manifest's
    ``extra["engine_built_for"]`` is this device; then this device's cached engine; then a build
    from the bundle's ONNX. A shipped engine that does not record its device (older bundles) is
    rebuilt when the ONNX is there, and otherwise tried (deserialization then decides).
    """
    candidates: list[Path] = []
    notes: list[str] = []
    model = manifest.files.get("model", "")
    onnx_path = bundle_dir / model if model.endswith(".onnx") and (bundle_dir / model).is_file() else None
    shipped = manifest.files.get("engine")
    if shipped:
        built_for = manifest.extra.get("engine_built_for")
        built_with = manifest.extra.get("engine_tensorrt_version")  # bundles before engine_built_for
        if isinstance(built_for, dict) and built_for:
            if built_for == identity.as_dict():
                candidates.append(bundle_dir / shipped)
            else:
                notes.append(
                    f"the bundle's engine was built for {built_for.get('gpu_name')} "
                    f"(sm {built_for.get('compute_capability')}, TensorRT {built_for.get('tensorrt_version')})"
                )
        elif built_with and built_with != identity.tensorrt_version:
            notes.append(f"the bundle's engine was built with TensorRT {built_with}")
        elif onnx_path is not None:
            notes.append("the bundle's engine does not record the GPU it was built for")
        else:
            candidates.append(bundle_dir / shipped)
    build_path = None
    if onnx_path is not None:
        digest = manifest.checksums.get(model) or sha256_file(onnx_path)
        build_path = cache_dir / engine_file_name(identity, settings, digest)
        if build_path.is_file():
            candidates.append(build_path)
    return EnginePlan(
        candidates=candidates,
        build_path=build_path,
        onnx_path=onnx_path,
        timing_cache_path=cache_dir / f"timing-{identity.slug()}.cache",
        notes=notes,
    )


def profile_shapes(
    shape: list[int | None], max_side: int, recorded: dict | None = None
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None:
    """(min, opt, max) NCHW shapes of the optimization profile, or ``None`` for a static input.

    ``recorded`` is the exporter's ``extra["tensorrt_profile"]`` ({"min", "opt", "max"}); when
    present it wins, so an engine built here matches the bundle's documented trtexec command.
    """
    if all(isinstance(d, int) for d in shape):
        return None
    if recorded:
        return tuple(recorded["min"]), tuple(recorded["opt"]), tuple(recorded["max"])

    def dims(batch: int, side: int) -> tuple[int, ...]:
        n = shape[0] if shape[0] is not None else batch
        c = shape[1] if shape[1] is not None else 3
        h = shape[2] if shape[2] is not None else side
        w = shape[3] if shape[3] is not None else side
        return (n, c, h, w)

    return dims(1, MIN_SIDE), dims(1, min(OPT_SIDE, max_side)), dims(MAX_BATCH, max_side)
