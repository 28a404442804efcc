"""Checkpoint model -> verified, calibrated bundle on disk (the one entry point of the exporters).

The steps, each announced on stderr: export the FP32 ONNX and verify it against PyTorch on real
images; build the target's model files (FP16 conversion, ONNX Runtime or TensorRT Q/DQ INT8 from
cached calibration ranges, OpenVINO IR / NNCF INT8); check them against the FP32 graph; for INT8
with ``max_drop``, hold the validation mIoU drop within the limit; write ``model.json``. All of it
happens in a temporary directory renamed into place at the end (:func:`runtime.files.atomic_dir`),
so a failure at any step leaves no bundle and an existing bundle untouched.

This module imports no ``edge_deeplab`` code: the caller (``edge-deeplab export``, the benchmark)
hands over the built model, the dataset samples and the mIoU function.
"""

from __future__ import annotations

import functools

import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from calibration.inputs import InputSpecLite, PreparedImage, prepare_samples
from runtime.preprocess import Placement
from calibration.ranges import DEFAULT_METHOD, METHODS, compute_ranges
from calibration.selection import CalibrationSet
from exporters import qdq, saturation
from exporters.guard import keep_drop_under
from exporters.onnx import INPUT_NAME, MIN_OPSET, export_onnx, min_input_side, torch_logits
from exporters.sensitivity import rank_layers
from exporters.verify import MIN_AGREEMENT, Validation, compare, ort_runner, points, require_agreement
from runtime.cpu import cpu_info
from runtime.errors import EdgeDeeplabError
from runtime.files import atomic_dir, atomic_write_text, check_writable
from runtime.manifest import (DEFAULT_PRECISION, LOGITS, OUTPUT_CHOICES, PRECISIONS, TARGET_PRECISIONS, TARGETS,
                              InputSpec, Manifest, write_manifest)
from runtime.progress import progress_bar

SENSITIVITY_IMAGES = 4  # images for the per-layer SQNR ranking: enough for a stable order
# A bundle scoring this many mIoU points below its checkpoint (at the checkpoint's native size)
# gets a warning naming the likely cause: more than INT8 or FP16 costs, so the input size is off.
WARN_DROP_POINTS = 1.0


def check_target(target: str, precision: str | None) -> str:
    """Validate a target/precision pair (before any slow work); returns the precision to use."""
    if target not in TARGETS:
        raise EdgeDeeplabError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    precision = precision or DEFAULT_PRECISION[target]
    if precision not in PRECISIONS:
        raise EdgeDeeplabError(f"unknown precision {precision!r}; choose {', '.join(PRECISIONS)}")
    if precision not in TARGET_PRECISIONS[target]:
        raise EdgeDeeplabError(
            f"target {target} has no {precision} precision; it offers {', '.join(TARGET_PRECISIONS[target])}"
        )
    return precision


def check_outputs(outputs: str) -> None:
    """An ``--outputs`` choice this exporter knows (before any slow work)."""
    if outputs not in OUTPUT_CHOICES:
        raise EdgeDeeplabError(f"unknown --outputs {outputs!r}; choose one of {', '.join(OUTPUT_CHOICES)}")


@dataclass
class CalibrationInput:
    """The calibration images: a dataset and the representative subset chosen from it."""

    dataset: Sequence  # samples with .image, .mask, .name
    chosen: CalibrationSet
    spec: str  # the dataset as the user named it (for the manifest)
    method: str = DEFAULT_METHOD


@dataclass
class ValidationInput:
    """Labelled images for mIoU and the function computing mIoU (fraction) from predictions.

    ``checkpoint_miou``: the checkpoint's own mIoU on the same images, each at its native size
    (PyTorch, no resizing or padding), which the bundle's mIoU at its input size is held against.
    """

    dataset: Sequence
    indices: Sequence[int]
    spec: str
    miou: Callable[[Sequence[np.ndarray], Sequence[np.ndarray]], float]
    checkpoint_miou: float | None = None


@dataclass
class ExportRequest:
    """Everything one export needs; ``model`` is an eval-mode torch module at the chosen stride."""

    model: Any
    target: str
    precision: str
    out: Path
    height: int
    width: int
    classes: list[str]
    palette: list[list[int]]
    mean: list[float]
    std: list[float]
    verify_samples: Sequence  # a few real images (samples with .image, .name)
    ignore_index: int = 255
    dynamic: bool = False
    uint8_input: bool = True  # the graph normalizes; the device feeds decoded bytes
    outputs: str = "mask"  # a key of runtime.manifest.OUTPUT_CHOICES
    opset: int = MIN_OPSET
    model_info: dict = field(default_factory=dict)
    source: dict = field(default_factory=dict)
    calibration: CalibrationInput | None = None
    validation: ValidationInput | None = None
    max_drop: float | None = None  # mIoU points (percent)
    force: bool = False
    cache_dir: Path | None = None
    log: Callable[[str], None] = field(default=lambda message: print(message, file=sys.stderr, flush=True))
    progress: bool = True  # bars for the steps that loop over images (on stderr, only on a terminal)


def check_request(req: ExportRequest) -> None:
    """The cheap checks, run before any export work."""
    check_target(req.target, req.precision)
    check_writable(req.out, req.force)
    if req.opset < MIN_OPSET:
        raise EdgeDeeplabError(f"--opset must be {MIN_OPSET} or later, got {req.opset}")
    check_outputs(req.outputs)
    stride = int(req.model_info.get("output_stride") or 32)
    side = min_input_side(stride)
    if req.height < side or req.width < side:
        raise EdgeDeeplabError(f"input size {req.height}x{req.width} is too small for output stride {stride}; "
                               f"use at least {side}x{side}")
    if not req.verify_samples:
        raise EdgeDeeplabError("no images to verify the export on; give --val-data or --calib-data")
    if req.precision == "int8":
        if req.calibration is None or not req.calibration.chosen.indices:
            raise EdgeDeeplabError(f"{req.target} int8 needs calibration images: give --calib-data")
        if req.calibration.method not in METHODS:
            raise EdgeDeeplabError(f"unknown --calib-method {req.calibration.method!r}; choose one of {', '.join(METHODS)}")
        if req.target == "openvino" and req.calibration.method != DEFAULT_METHOD:
            raise EdgeDeeplabError("openvino int8 uses NNCF's own range estimation; --calib-method applies to "
                                   "the onnxruntime and tensorrt targets")
    if req.max_drop is not None:
        if req.precision != "int8":
            raise EdgeDeeplabError("--max-drop applies to int8 exports only")
        if req.max_drop < 0:
            raise EdgeDeeplabError(f"--max-drop must be >= 0 mIoU points, got {req.max_drop}")
        if req.validation is None or not req.validation.indices:
            raise EdgeDeeplabError("--max-drop needs labelled validation images: give --val-data")


def tool_versions(target: str) -> dict[str, str]:
    """Versions of everything that shaped the bundle."""
    names = ["torch", "onnx", "onnxscript", "onnxruntime", "numpy", "edge-deeplab"]
    if target == "openvino":
        names += ["openvino", "nncf"]
    if target == "tensorrt":
        names += ["tensorrt"]
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # not installed (e.g. edge-deeplab run from a source checkout)
    return versions


class _Exporter:
    """One export's state: the work directory, prepared images, the FP32 reference."""

    def __init__(self, req: ExportRequest, work: Path, bundle: Path) -> None:
        self.req, self.work, self.bundle = req, work, bundle
        self.spec = InputSpecLite(req.height, req.width, "uint8" if req.uint8_input else "float32",
                                  tuple(req.mean), tuple(req.std))
        self.fp32_path = work / "model_fp32.onnx"
        self.step_no = 0
        self.calibration_info: dict | None = None
        self.verification: dict = {}
        self.extra: dict = {}
        self.int8_kernels: dict | None = None

    def step(self, message: str) -> None:
        self.step_no += 1
        self.req.log(f"[{self.step_no}] {message}")

    def score(self, run, what: str) -> float:
        """mIoU of ``run`` on the validation images, with a bar: a pass over them is the slow part
        of scoring a bundle and of every accuracy-guard step, and prints nothing until it ends."""
        validation = self.validation
        with progress_bar(total=len(validation.items), desc=what, unit="img", leave=False,
                          enabled=self.req.progress) as bar:
            def counted(array: np.ndarray):
                outputs = run(array)
                bar.update(1)
                return outputs

            return validation.score(counted)

    # -- shared steps -------------------------------------------------------------------------------
    def export_fp32(self) -> None:
        req = self.req
        kind = "dynamic" if req.dynamic else "static"
        self.step(f"exporting FP32 ONNX (opset {req.opset}, {kind} {req.height}x{req.width}"
                  f"{', uint8 input' if req.uint8_input else ''})")
        export_onnx(req.model, self.fp32_path, req.height, req.width, req.dynamic, req.uint8_input,
                    req.mean, req.std, req.opset, OUTPUT_CHOICES[req.outputs])
        self.verify_items = prepare_samples(req.verify_samples, range(len(req.verify_samples)), self.spec,
                                            progress=req.progress)
        sizes = [self.spec]
        if req.dynamic:  # a dynamic graph must also be right at sizes other than the export size
            alt = InputSpecLite(max(33, 3 * req.height // 4 + 1), max(33, req.width // 2 + 3), self.spec.dtype,
                                self.spec.mean, self.spec.std)
            sizes.append(alt)
        self.step(f"verifying ONNX against PyTorch on {len(self.verify_items)} image(s)"
                  f"{' at 2 sizes' if req.dynamic else ''}")
        fp32 = ort_runner(self.fp32_path)
        checks = []
        for spec in sizes:
            items = self.verify_items if spec is self.spec else prepare_samples(
                req.verify_samples, range(len(req.verify_samples)), spec, progress=req.progress)
            arrays = [i.array for i in items]
            reference = [{LOGITS: logits} for logits in torch_logits(req.model, arrays, req.uint8_input,
                                                                    req.mean, req.std)]
            agreement = compare(reference, [fp32(a) for a in arrays])
            require_agreement(agreement, "fp32", "the exported ONNX")
            checks.append({"input_size": [spec.height, spec.width], **agreement.as_dict()})
            req.log(f"    {spec.height}x{spec.width}: {agreement.describe()} against PyTorch's argmax")
        self.fp32_reference = [fp32(i.array) for i in self.verify_items]
        self.verification["onnx_vs_pytorch"] = {"reference": "pytorch", "min_agreement": 0.999, "checks": checks}
        self.fp32_run = fp32

    def check_against_fp32(self, run, precision: str, what: str) -> None:
        """FP16/INT8 checked against the FP32 graph: argmax agreement (and mIoU below)."""
        agreement = compare(self.fp32_reference, [run(i.array) for i in self.verify_items])
        self.req.log(f"    vs FP32: {agreement.describe()}")
        require_agreement(agreement, precision, what)
        self.verification["vs_fp32"] = {"reference": "onnx fp32", **agreement.as_dict(),
                                        "min_agreement": MIN_AGREEMENT[precision]}

    @functools.cached_property
    def validation(self) -> Validation | None:
        """The validation images, prepared once however many steps score on them."""
        v = self.req.validation
        if v is None:
            return None
        return Validation(prepare_samples(v.dataset, v.indices, self.spec, "preparing validation images",
                                          self.req.progress), v.miou)

    @functools.cached_property
    def calib_items(self) -> list[PreparedImage]:
        """The calibration images, prepared once (the accuracy guard re-quantizes with them)."""
        c = self.req.calibration
        return prepare_samples(c.dataset, c.chosen.indices, self.spec, "preparing calibration images",
                               self.req.progress)

    def record_accuracy(self, run, fp32_miou: float | None = None) -> None:
        """The bundle's mIoU on the validation images at its input size, held against the
        checkpoint's at native size and (FP16/INT8) against the FP32 graph's; a warning names the
        likely cause when the bundle loses more than :data:`WARN_DROP_POINTS` to the checkpoint."""
        validation, req = self.validation, self.req
        if validation is None:
            return
        self.step(f"scoring the bundle on {len(validation.items)} validation image(s) at {req.height}x{req.width}")
        miou = self.score(run, f"scoring {req.precision}")
        record: dict[str, Any] = {"images": len(validation.items), "dataset": req.validation.spec,
                                  "input_size": [req.height, req.width], req.precision: miou}
        message = f"    mIoU {points(miou):.2f} (bundle at {req.height}x{req.width})"
        if req.precision != "fp32":
            fp32_miou = self.score(self.fp32_run, "scoring fp32") if fp32_miou is None else fp32_miou
            record.update({"fp32": fp32_miou, "drop_points": points(fp32_miou - miou)})
            message += f", FP32 graph {points(fp32_miou):.2f} (drop {points(fp32_miou - miou):.2f} points)"
        native = req.validation.checkpoint_miou
        if native is not None:
            record.update({"checkpoint_native": native, "drop_vs_checkpoint_points": points(native - miou)})
            message += f", checkpoint at native size {points(native):.2f}"
        self.verification["miou"] = record
        req.log(message)
        if native is not None and points(native - miou) > WARN_DROP_POINTS:
            req.log(f"warning: the bundle scores {points(native - miou):.1f} mIoU points below the checkpoint; "
                    + size_advice([i.placement for i in validation.items], req.height, req.width))

    # -- INT8 through ONNX Runtime's quantizer (onnxruntime and tensorrt targets) --------------------
    def qdq_int8(self, flavor: str, dest: Path) -> None:
        req, calib = self.req, self.req.calibration
        items = self.calib_items
        self.step(f"calibrating activation ranges ({calib.method}, {len(items)} images)")
        ranges = compute_ranges(self.fp32_path, INPUT_NAME, [i.array for i in items], calib.method,
                                calib.chosen.fingerprint, req.cache_dir, progress=req.progress)
        req.log(f"    ranges {'reused from cache' if ranges.cached else f'computed in {ranges.seconds:.1f} s'}: {ranges.path}")
        self.step(f"quantizing to INT8 Q/DQ ({'TensorRT' if flavor == 'tensorrt' else 'ONNX Runtime CPU'} placement)")
        candidates = self.work / "candidates"
        candidates.mkdir(exist_ok=True)
        counter = iter(range(10_000))

        def quantize(exclude: Sequence[str]) -> Path:
            return qdq.quantize(self.fp32_path, candidates / f"int8_{next(counter)}.onnx", ranges, flavor, exclude)

        info: dict = {"toolchain": "onnxruntime.quantize_static", "format": "QDQ", "flavor": flavor,
                      "settings": qdq.settings(flavor), "ranges_key": ranges.key, "ranges_cached": ranges.cached}
        if req.max_drop is None:
            chosen = quantize(())
            info.update({"excluded": [], "max_drop_points": None})
        else:
            validation = self.validation
            self.step(f"accuracy guard: keeping the INT8 mIoU drop <= {req.max_drop} points")
            fp32_miou = self.score(self.fp32_run, "scoring fp32")
            sens_arrays = [i.array for i in items[:SENSITIVITY_IMAGES]]
            ranking_info: list = []

            def ranking(path: Path) -> list[str]:
                ranked = rank_layers(self.fp32_path, path, sens_arrays, progress=req.progress)
                ranking_info.extend(ranked)
                return [r.node for r in ranked]

            result = keep_drop_under(quantize, lambda p: self.score(ort_runner(p), "scoring int8"), fp32_miou,
                                     req.max_drop, ranking, req.log)
            chosen = result.path
            info.update({
                "excluded": result.excluded, "max_drop_points": req.max_drop,
                "measured": {"fp32_miou": result.fp32_miou, "int8_miou": result.int8_miou,
                             "drop_points": result.drop_points, "val_images": len(validation.items),
                             "val_dataset": req.validation.spec},
                "guard_steps": result.steps,
                "sensitivity": [{"node": r.node, "added_noise": float(f"{r.added_noise:.4g}"),
                                 "input_sqnr_db": round(r.input_sqnr_db, 2), "output_sqnr_db": round(r.output_sqnr_db, 2)}
                                for r in ranking_info[:10]],
                "sensitivity_method": "per-conv added relative noise power (FP32 vs INT8 tensors, SQNR)",
            })
        shutil.copyfile(chosen, dest)
        self.calibration_info = info
        if flavor == "cpu":
            self.record_int8_kernels(dest)
        self.check_against_fp32(ort_runner(dest), "int8", "the INT8 model")
        measured = info.get("measured")
        self.record_accuracy(ort_runner(dest), measured["fp32_miou"] if measured else None)

    def record_int8_kernels(self, model: Path) -> None:
        """Bound every conv's worst 16-bit pair sum (which CPUs run the bundle exactly) and measure
        the fused integer kernels against the exact Q/DQ semantics here, on kernels that compute the
        sums exactly: the agreement ``doctor`` expects on a device when nothing is wrong."""
        record = saturation.kernel_record(model, qdq.CPU_WEIGHT_BITS)
        cpu = cpu_info()
        items = self.validation.items if self.validation is not None else self.verify_items
        fused, exact = ort_runner(model), ort_runner(model, exact=True)
        agreement = compare([exact(i.array) for i in items], [fused(i.array) for i in items])
        kernels_exact = record["runs_exactly_on"] == saturation.ANYWHERE or cpu.int8_pairs_saturate is False
        record["fused_vs_exact"] = {"agreement": round(agreement.argmax_agreement, 5), "images": len(items),
                                    "cpu": cpu.model, "kernels_exact": kernels_exact}
        self.int8_kernels = record
        where = "every CPU" if record["runs_exactly_on"] == saturation.ANYWHERE else "VNNI CPUs only"
        self.req.log(f"    int8 kernels: worst pair sum {record['worst_pair_sum']} (int16 holds "
                     f"{saturation.INT16_MAX}) over {record['gemm_convs']} convs: exact on {where}; fused kernels "
                     f"vs exact Q/DQ semantics here: mask agreement {agreement.argmax_agreement:.5f}")

    # -- targets ------------------------------------------------------------------------------------
    def build(self) -> dict[str, str]:
        req = self.req
        self.export_fp32()
        target, precision = req.target, req.precision
        if target in ("onnx", "onnxruntime", "tensorrt"):
            dest = self.bundle / "model.onnx"
            if precision == "int8":
                self.qdq_int8("cpu" if target == "onnxruntime" else "tensorrt", dest)
            elif precision == "fp16" and target == "onnx":
                self.step("converting to FP16 (inputs and outputs stay float32)")
                import onnx
                from onnxruntime.transformers.float16 import convert_float_to_float16

                half = convert_float_to_float16(onnx.load(str(self.fp32_path)), keep_io_types=True)
                onnx.save(half, str(dest))
                self.check_against_fp32(ort_runner(dest), "fp16", "the FP16 model")
                self.record_accuracy(ort_runner(dest))
            else:
                # FP32, or TensorRT FP16 (a build flag on the device): the bundle's ONNX is the verified graph.
                shutil.copyfile(self.fp32_path, dest)
                self.record_accuracy(self.fp32_run)
            files = {"model": dest.name}
            if target == "tensorrt":
                files.update(self.tensorrt_extras(dest))
            return files
        return self.openvino()

    def openvino(self) -> dict[str, str]:
        from exporters import openvino as ovx

        req = self.req
        model = ovx.read_onnx(self.fp32_path)
        if req.precision == "int8":
            items = self.calib_items
            how = "NNCF accuracy control" if req.max_drop is not None else "NNCF post-training quantization"
            self.step(f"quantizing to INT8 with {how} ({len(items)} calibration images)")
            model, details = ovx.quantize_int8(model, items, self.validation, req.max_drop)
            details.update({"excluded": details.pop("float_convolutions", []), "max_drop_points": req.max_drop})
            self.calibration_info = details
        self.step(f"writing OpenVINO IR ({req.precision})")
        files = ovx.save_ir(model, self.bundle, fp16=req.precision == "fp16")
        ir = ovx._ov().Core().read_model(str(self.bundle / files["model"]))
        # Checked with f32 inference precision: the CPU plugin's default (bf16 where the CPU has it)
        # would mix its own rounding into what is a check of the IR file.
        run = ovx.ov_runner(ir, "f32")
        self.check_against_fp32(run, req.precision, f"the OpenVINO {req.precision} IR")
        self.record_accuracy(run)
        if req.precision == "int8" and "miou" in self.verification:
            self.calibration_info["measured"] = dict(self.verification["miou"])
        self.verification["openvino_precision_hint"] = "f32"
        return files

    def tensorrt_extras(self, onnx_path: Path) -> dict[str, str]:
        from exporters import tensorrt as trtx

        req = self.req
        settings = trtx.export_settings(req.precision, req.height, req.width, req.dynamic, INPUT_NAME)
        command = settings.trtexec_command(onnx_path.name)
        self.extra.update({"trtexec": command, "tensorrt_build": settings.record(),
                           "tensorrt_profile": trtx.profile_record(req.height, req.width, req.dynamic),
                           "engine_built_here": False, "explicit_quantization": req.precision == "int8"})
        atomic_write_text(self.bundle / "README.txt", trtx.readme(command, req.precision))
        files = {"readme": "README.txt"}
        if req.precision == "fp16":
            self.verification["tensorrt_fp16"] = ("FP16 is a TensorRT build flag: the ONNX is the verified FP32 graph; "
                                                  "the engine is built and run on the device")
        if trtx.have_tensorrt():
            self.step("building the TensorRT engine (this takes minutes)")
            identity = trtx.build_here(onnx_path, settings, self.bundle)
            self.extra.update({"engine_built_here": True, "engine_built_for": identity.as_dict()})
            files["engine"] = trtx.ENGINE_NAME
        else:
            req.log("    tensorrt is not installed here: the engine is built on the device at first load "
                    f"(or by hand: {command})")
        return files

    def manifest(self, files: dict[str, str]) -> Manifest:
        req = self.req
        shape: list[int | None] = [None, 3, None, None] if req.dynamic else [1, 3, req.height, req.width]
        calibration = None
        if req.precision == "int8":
            c = req.calibration
            method = "nncf (min/max with outlier quantiles)" if req.target == "openvino" else c.method
            calibration = {"method": method, "dataset": c.spec, "images": len(c.chosen.indices),
                           "set": c.chosen.summary(), **(self.calibration_info or {})}
        return Manifest(
            target=req.target,
            precision=req.precision,
            files=files,
            input=InputSpec(name=INPUT_NAME, shape=shape, dtype=self.spec.dtype, resize="pad"),
            classes=list(req.classes),
            palette=[list(map(int, c)) for c in req.palette],
            mean=list(map(float, req.mean)),
            std=list(map(float, req.std)),
            outputs=list(OUTPUT_CHOICES[req.outputs]),
            ignore_index=int(req.ignore_index),
            model={**req.model_info, "input_size": [req.height, req.width], "dynamic": req.dynamic,
                   "opset": req.opset, "num_classes": len(req.classes)},
            source=dict(req.source),
            calibration=calibration,
            verification=self.verification,
            tools=tool_versions(req.target),
            extra=self.extra,
            int8_kernels=self.int8_kernels,
        )


def size_advice(placements: Sequence[Placement], height: int, width: int) -> str:
    """The likely cause of a bundle losing mIoU to its checkpoint, and the flag that changes it."""
    shrunk = sum(p.scaled_h < p.orig_h or p.scaled_w < p.orig_w for p in placements)
    padded = sum(p.scaled_h < p.input_h or p.scaled_w < p.input_w for p in placements)
    largest = (max(p.orig_h for p in placements), max(p.orig_w for p in placements))
    fix = f"export with --input-size {largest[0]}x{largest[1]} (the largest validation image) or --dynamic"
    if shrunk:
        return (f"{shrunk} of {len(placements)} images are larger than the {height}x{width} input and were shrunk "
                f"to fit (then padded): {fix}")
    if padded:
        return (f"{padded} of {len(placements)} images are smaller than the {height}x{width} input and run padded, "
                f"which the model never saw in training: {fix}")
    return "the images fill the input exactly, so the loss comes from the precision: try --max-drop"


def export_bundle(req: ExportRequest) -> Path:
    """Run the whole export; returns the bundle directory. Raises EdgeDeeplabError on bad input."""
    req.precision = check_target(req.target, req.precision)
    check_request(req)
    start = time.perf_counter()
    with atomic_dir(req.out, overwrite=req.force) as bundle, \
            tempfile.TemporaryDirectory(prefix="edge-deeplab-export-") as work:
        exporter = _Exporter(req, Path(work), bundle)
        files = exporter.build()
        write_manifest(bundle, exporter.manifest(files))
    req.log(f"wrote {req.out} ({req.target} {req.precision}) in {time.perf_counter() - start:.1f} s")
    return Path(req.out)
