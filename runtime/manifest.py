"""The bundle manifest (``model.json``): everything the runtime needs to run a model, no guessing.

A bundle is a directory holding the model file(s) for one target and this manifest. Exporters build
a :class:`Manifest` and write it with :func:`write_manifest`; the runtime reads it with
:func:`read_manifest`, which rejects what it cannot run (a newer schema, a missing or altered model
file) with one clear line instead of failing later inside a backend.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from runtime.errors import BundleError
from runtime.files import atomic_write_text, sha256_file

# 2: ``outputs`` (the model's named outputs: a class mask, logits or both) replaces ``output_name``.
# 3: ``int8_kernels`` (which CPUs compute an onnxruntime INT8 bundle's sums exactly).
# Version 1 and 2 manifests are still read.
SCHEMA_VERSION = 3
MANIFEST_NAME = "model.json"

MASK = "mask"  # N x H x W class indices (uint8 up to 256 classes, else int32): ArgMax inside the graph
LOGITS = "logits"  # N x C x H x W float scores at the input size, for soft outputs and evaluation
# ``export --outputs`` choice -> the graph outputs it gives, in order.
OUTPUT_CHOICES: dict[str, tuple[str, ...]] = {"mask": (MASK,), "logits": (LOGITS,), "both": (MASK, LOGITS)}

TARGETS = ("onnx", "onnxruntime", "openvino", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
# Which precisions each target can produce (the design's target table); the first is the target's
# default: fp32 where the target has it (the reference row), INT8 for the INT8-only onnxruntime target.
TARGET_PRECISIONS: dict[str, tuple[str, ...]] = {
    "onnx": ("fp32", "fp16"),
    "onnxruntime": ("int8",),
    "openvino": ("fp32", "fp16", "int8"),
    "tensorrt": ("fp32", "fp16", "int8"),
}
DEFAULT_PRECISION: dict[str, str] = {target: offered[0] for target, offered in TARGET_PRECISIONS.items()}
# The backend that runs each target's model files.
TARGET_BACKEND = {"onnx": "onnxruntime", "onnxruntime": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}


@dataclass
class InputSpec:
    """The model input. ``shape`` is NCHW; ``None`` marks a dynamic axis.

    ``dtype`` is ``float32`` when the runtime normalizes (``(pixel/255 - mean) / std``), or
    ``uint8`` when the normalization was folded into the graph and raw RGB bytes go straight in.
    ``resize`` says how an image of another size is fitted to a static input: ``pad`` (shrink to fit
    if larger, keep the aspect ratio, pad bottom/right; the logits are cropped back) or ``stretch``.
    """

    name: str = "image"
    shape: list[int | None] = field(default_factory=lambda: [1, 3, None, None])
    dtype: str = "float32"
    layout: str = "NCHW"
    color: str = "RGB"
    resize: str = "pad"

    @property
    def dynamic(self) -> bool:
        return self.shape[2] is None or self.shape[3] is None


@dataclass
class Manifest:
    """One bundle's description; see ``docs/bundle.md`` for every field."""

    target: str
    precision: str
    files: dict[str, str]  # role -> file name inside the bundle ("model", "weights", "engine", ...)
    input: InputSpec
    classes: list[str]
    palette: list[list[int]]
    mean: list[float]
    std: list[float]
    outputs: list[str] = field(default_factory=lambda: [LOGITS])  # graph outputs, see OUTPUT_CHOICES
    ignore_index: int = 255
    model: dict[str, Any] = field(default_factory=dict)  # backbone, output_stride, decoder, num_classes
    source: dict[str, Any] = field(default_factory=dict)  # checkpoint path and sha256
    calibration: dict[str, Any] | None = None  # images used, method, excluded layers, measured drop
    verification: dict[str, Any] = field(default_factory=dict)  # max_abs_diff, argmax_agreement
    tools: dict[str, str] = field(default_factory=dict)  # tool versions used to build the bundle
    extra: dict[str, Any] = field(default_factory=dict)  # target-specific (e.g. trtexec command)
    int8_kernels: dict[str, Any] | None = None  # onnxruntime INT8: weight bits, CPUs that run it exactly
    checksums: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    schema_version: int = SCHEMA_VERSION

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def has_mask(self) -> bool:
        """The graph returns the class mask itself (no argmax on the host)."""
        return MASK in self.outputs

    @property
    def has_logits(self) -> bool:
        return LOGITS in self.outputs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Manifest":
        data = dict(data)
        if "output_name" in data:  # schema 1: one output, the logits
            data["outputs"] = [data.pop("output_name")]
        data["input"] = InputSpec(**data.get("input", {}))
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise BundleError(f"manifest has unknown fields {unknown}")
        return cls(**data)


def write_manifest(bundle_dir: str | Path, manifest: Manifest) -> Path:
    """Checksum every model file, then write ``model.json`` atomically."""
    bundle_dir = Path(bundle_dir)
    if manifest.target not in TARGETS:
        raise BundleError(f"unknown target {manifest.target!r}; expected one of {', '.join(TARGETS)}")
    manifest.checksums = {}
    for name in manifest.files.values():
        path = bundle_dir / name
        if not path.is_file():
            raise BundleError(f"bundle file {name} was not written")
        manifest.checksums[name] = sha256_file(path)
    text = json.dumps(manifest.to_dict(), indent=2) + "\n"
    return atomic_write_text(bundle_dir / MANIFEST_NAME, text)


def read_manifest(bundle_dir: str | Path, verify_files: bool = True) -> Manifest:
    """Read and check a bundle's manifest.

    ``verify_files`` compares each model file with its recorded sha256, which catches a truncated
    copy to a device before a backend fails on it with an obscure message.
    """
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST_NAME
    if not bundle_dir.is_dir():
        raise BundleError(f"{bundle_dir} is not a directory; a bundle is a folder made by 'edge-deeplab export'")
    if not path.is_file():
        raise BundleError(f"{bundle_dir} is not a bundle: it has no {MANIFEST_NAME}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path} is not a bundle manifest")
    version = data.get("schema_version")
    if not isinstance(version, int):
        raise BundleError(f"{path} has no schema_version")
    if version > SCHEMA_VERSION:
        raise BundleError(
            f"{path} has schema version {version}, newer than this runtime understands ({SCHEMA_VERSION}); "
            "upgrade edge-deeplab on this device"
        )
    check_field_types(data, path)
    try:
        manifest = Manifest.from_dict(data)
    except TypeError as exc:
        raise BundleError(f"{path} is missing fields: {exc}") from None
    if manifest.target not in TARGETS:
        raise BundleError(f"{path}: unknown target {manifest.target!r}")
    if manifest.precision not in TARGET_PRECISIONS[manifest.target]:
        raise BundleError(f"{path}: target {manifest.target} has no precision {manifest.precision!r}")
    if not manifest.outputs or any(name not in (MASK, LOGITS) for name in manifest.outputs):
        raise BundleError(f"{path}: outputs {manifest.outputs!r} must name {MASK!r}, {LOGITS!r} or both")
    check_file_names(manifest, path)
    check_class_count(manifest, path)
    if verify_files:
        for name, digest in manifest.checksums.items():
            file = bundle_dir / name
            if not file.is_file():
                raise BundleError(f"bundle {bundle_dir} is incomplete: {name} is missing")
            if sha256_file(file) != digest:
                raise BundleError(f"bundle file {file} does not match its manifest (truncated or altered copy?)")
    return manifest


# JSON type of each manifest field, for check_field_types. A hand-edited or damaged model.json
# must fail here with the field's name, not later inside a backend with a Python traceback.
_OBJECT, _LIST, _STR, _INT, _NUMBER = dict, list, str, int, (int, float)
_FIELD_TYPES: dict[str, Any] = {
    "target": _STR, "precision": _STR, "files": _OBJECT, "input": _OBJECT, "classes": _LIST,
    "palette": _LIST, "mean": _LIST, "std": _LIST, "outputs": _LIST, "output_name": _STR, "ignore_index": _INT,
    "model": _OBJECT, "source": _OBJECT, "calibration": (_OBJECT, type(None)), "verification": _OBJECT,
    "tools": _OBJECT, "extra": _OBJECT, "checksums": _OBJECT, "schema_version": _INT,
    "int8_kernels": (_OBJECT, type(None)),
}
# ``int8_kernels``: the fields the runtime reads, and the values it understands (see exporters.saturation).
RUNS_EXACTLY_ON = ("any", "vnni")
_INT8_KERNEL_INTS = ("weight_bits", "gemm_convs", "convs_over_int16", "worst_pair_sum", "int16_limit")
_INPUT_TYPES: dict[str, Any] = {"name": _STR, "shape": _LIST, "dtype": _STR, "layout": _STR, "color": _STR, "resize": _STR}
_INPUT_VALUES: dict[str, tuple[str, ...]] = {
    "dtype": ("float32", "uint8"), "layout": ("NCHW",), "color": ("RGB",), "resize": ("pad", "stretch"),
}
_JSON_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number", type(None): "null"}


def _json_type(value: Any) -> str:
    return "a boolean" if isinstance(value, bool) else _JSON_NAMES.get(type(value), type(value).__name__)


def _is(value: Any, expected: Any) -> bool:
    """isinstance, except that JSON true/false counts as no other type (no manifest field is a boolean)."""
    return isinstance(value, expected) and not isinstance(value, bool)


def _expect(value: Any, expected: Any, where: str, path: Path) -> None:
    if not _is(value, expected):
        wanted = " or ".join(_JSON_NAMES[t] for t in (expected if isinstance(expected, tuple) else (expected,)))
        raise BundleError(f"{path}: {where} must be {wanted}, not {_json_type(value)} ({json.dumps(value)[:60]})")


def check_field_types(data: dict[str, Any], path: Path) -> None:
    """Check the JSON type of every known field and of the items inside them (one line per problem)."""
    for name, expected in _FIELD_TYPES.items():
        if name in data:
            _expect(data[name], expected, f'"{name}"', path)
    for name, expected in _INPUT_TYPES.items():
        if name in data.get("input", {}):
            _expect(data["input"][name], expected, f'"input.{name}"', path)
    for index, dim in enumerate(data.get("input", {}).get("shape", [])):
        _expect(dim, (int, type(None)), f'"input.shape[{index}]"', path)
        if dim is not None and dim < 1:
            raise BundleError(f'{path}: "input.shape[{index}]" must be positive or null (dynamic), not {dim}')
    for name, allowed in _INPUT_VALUES.items():
        value = data.get("input", {}).get(name)
        if value is not None and value not in allowed:
            raise BundleError(f'{path}: "input.{name}" must be one of {", ".join(allowed)}, not {value!r}')
    for name in ("files", "checksums", "tools"):
        for key, value in data.get(name, {}).items():
            _expect(value, _STR, f'"{name}.{key}"', path)
    for index, value in enumerate(data.get("classes", [])):
        _expect(value, _STR, f'"classes[{index}]"', path)
    for index, colour in enumerate(data.get("palette", [])):
        _expect(colour, _LIST, f'"palette[{index}]"', path)
        if len(colour) != 3 or not all(_is(c, _INT) and 0 <= c <= 255 for c in colour):
            raise BundleError(f'{path}: "palette[{index}]" must be three integers 0-255, not {json.dumps(colour)[:60]}')
    for name in ("mean", "std"):
        values = data.get(name, [])
        if len(values) != 3 or not all(_is(v, _NUMBER) for v in values):
            raise BundleError(f'{path}: "{name}" must be three numbers (R, G, B), not {json.dumps(values)[:60]}')
    if any(v <= 0 for v in data.get("std", [1])):
        raise BundleError(f'{path}: "std" must be positive, not {json.dumps(data["std"])[:60]}')
    check_int8_kernels(data.get("int8_kernels"), path)


def check_int8_kernels(record: Any, path: Path) -> None:
    """The INT8 kernel record must say which CPUs run the bundle exactly in words the runtime
    knows: a damaged one would otherwise silently skip the saturation warning."""
    if record is None:
        return
    where = '"int8_kernels.runs_exactly_on"'
    if record.get("runs_exactly_on") not in RUNS_EXACTLY_ON:
        raise BundleError(f"{path}: {where} must be one of {', '.join(RUNS_EXACTLY_ON)}, "
                          f"not {json.dumps(record.get('runs_exactly_on'))[:60]}; re-export the bundle")
    for name in _INT8_KERNEL_INTS:
        if name in record:
            _expect(record[name], _INT, f'"int8_kernels.{name}"', path)
    if not 2 <= record.get("weight_bits", 8) <= 8:
        raise BundleError(f'{path}: "int8_kernels.weight_bits" must be 2-8, not {record["weight_bits"]}')
    measured = record.get("fused_vs_exact")
    if measured is not None:
        _expect(measured, _OBJECT, '"int8_kernels.fused_vs_exact"', path)
        for name in ("agreement", "lowest_image"):
            value = measured.get(name, 1.0 if name == "lowest_image" else None)
            if not (_is(value, _NUMBER) and 0 <= value <= 1):
                raise BundleError(f'{path}: "int8_kernels.fused_vs_exact.{name}" must be a number 0-1, '
                                  f'not {json.dumps(value)[:60]}')


def check_class_count(manifest: Manifest, path: Path) -> None:
    """The class names, the colours and the model's own class count must agree.

    A model.json edited to list 3 classes for a 7-class model would otherwise run, and the
    runtime would write labels it has no name or colour for; the model's output itself is checked
    at every prediction (:class:`runtime.segmenter.Segmenter`).
    """
    count = len(manifest.classes)
    if count == 0:
        raise BundleError(f'{path}: "classes" is empty; a bundle names each class its model predicts')
    if len(manifest.palette) != count:
        raise BundleError(f'{path}: "palette" has {len(manifest.palette)} colours for {count} classes; '
                          "it needs one colour per class")
    declared = manifest.model.get("num_classes")
    if declared is not None and declared != count:
        raise BundleError(f'{path}: "classes" names {count} classes but the model predicts {declared} '
                          '("model.num_classes"); re-copy or re-export the bundle')


def check_file_names(manifest: Manifest, path: Path) -> None:
    """Every model file must be a plain name inside the bundle: a manifest may not point elsewhere.

    A bundle comes from another machine; letting ``"model": "../../home/user/x"`` through would
    make the runtime read (and, for TensorRT engines, write beside) files outside the folder.
    """
    for name in [*manifest.files.values(), *manifest.checksums]:
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if not parts or parts[0] == "/" or ".." in parts:
            raise BundleError(f"{path}: file {name!r} is not inside the bundle; a bundle may only name its own files")
