"""What ``edge-deeplab doctor`` finds out: the platform, one check per requirement, each bundle run.

The first command to run on a device, so it must work where the least is installed: torch-free,
and every vendor package (TensorRT, cuda-python, OpenCV, ONNX Runtime, OpenVINO) probed inside a
try, where its absence is a finding rather than a crash. A check that does not apply to this
machine (TensorRT on a CPU host without it, L4T off a Jetson) is reported as skipped with the
reason, never as passed.
"""

from __future__ import annotations

import platform
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from runtime.backends.cuda_runtime import CUDA_PYTHON_INSTALL, cuda_python_problem, cuda_python_version
from runtime.errors import EdgeDeeplabError

DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
TEGRA_RELEASE = Path("/etc/nv_tegra_release")
CUDA_VERSION_JSON = Path("/usr/local/cuda/version.json")
MIN_L4T = (36, 4)  # JetPack 6.1: TensorRT 10.3, CUDA 12.6
# Mask agreement a bundle must reach against its reference run. Below 1 because the two runs
# legitimately differ in kernels: TF32/FP16 accumulation or INT8 requantization rounding move a few
# pixels whose class scores are near-ties. An ONNX Runtime or OpenVINO INT8 bundle on a CPU whose
# integer kernels compute its sums exactly differs from its exact Q/DQ semantics only by rounding:
# 0.994 on the test suite's barely trained model, 0.99+ on trained ones. Saturating kernels scored
# 0.89-0.97 (issue 16), a wrong engine or a preprocessing mismatch far lower. TensorRT INT8 is
# held to less: the engine also picks FP16 for layers and fuses differently from ONNX Runtime.
MIN_AGREEMENT = {"fp32": 0.99, "fp16": 0.98, "int8": 0.99}
MIN_AGREEMENT_TENSORRT_INT8 = 0.95
# An onnxruntime INT8 bundle records the agreement its export measured on kernels that compute the
# sums exactly, per image: the doctor expects at least its lowest image's, less this much, over its
# own few images (a model with many near-tied pixels varies from image to image: the tiny test
# models' images ranged 0.97-1.0). Saturating kernels cost that model 3-11 points.
INT8_MARGIN = 0.01


@dataclass
class Check:
    """One line of the report: ``status`` is ok, fail or skip; ``fix`` says what to do on fail."""

    name: str
    status: str
    detail: str
    fix: str = ""


@dataclass
class Platform:
    """What this machine is and which runtimes it has (``None``: not found)."""

    python: str
    system: str
    machine: str
    jetson_model: str | None = None
    l4t: str | None = None
    cuda: dict[str, str] = field(default_factory=dict)
    tensorrt: str | None = None
    tensorrt_error: str | None = None
    cuda_python: str | None = None
    opencv: str | None = None
    opencv_gstreamer: bool | None = None
    onnxruntime: str | None = None
    onnxruntime_providers: list[str] = field(default_factory=list)
    openvino: str | None = None
    openvino_devices: list[str] = field(default_factory=list)
    gpus: int | None = None
    gpu_error: str | None = None
    cpu: dict[str, Any] = field(default_factory=dict)  # runtime.cpu.CpuInfo.to_dict(): model, INT8 features

    @property
    def is_jetson(self) -> bool:
        return bool(self.jetson_model and "jetson" in self.jetson_model.lower()) or self.l4t is not None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "is_jetson": self.is_jetson}


def read_l4t(text: str) -> str | None:
    """'# R36 (release), REVISION: 4.0, ...' -> '36.4.0' (the L4T release JetPack is built on)."""
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def probe_platform() -> Platform:
    """Read the device tree and L4T release files and import each runtime to read its version."""
    from runtime.cpu import cpu_info

    found = Platform(python=platform.python_version(), system=platform.platform(), machine=platform.machine(),
                     cpu=cpu_info().to_dict())
    if DEVICE_TREE_MODEL.is_file():
        found.jetson_model = DEVICE_TREE_MODEL.read_bytes().decode(errors="replace").rstrip("\x00").strip() or None
    if TEGRA_RELEASE.is_file():
        found.l4t = read_l4t(TEGRA_RELEASE.read_text(errors="replace"))
    try:
        import tensorrt

        found.tensorrt = str(tensorrt.__version__)
    except Exception as exc:  # ImportError, or OSError when its libraries are not mounted
        found.tensorrt_error = _first_line(exc)
    found.cuda_python = cuda_python_version()
    _probe_cuda(found)
    cv2 = _installed("cv2")
    if cv2 is not None:
        found.opencv = cv2.__version__
        found.opencv_gstreamer = bool(re.search(r"GStreamer:\s+YES", cv2.getBuildInformation()))
    onnxruntime = _installed("onnxruntime")
    if onnxruntime is not None:
        found.onnxruntime = onnxruntime.__version__
        found.onnxruntime_providers = list(onnxruntime.get_available_providers())
    openvino = _installed("openvino")
    if openvino is not None:
        found.openvino = openvino.get_version()
        found.openvino_devices = list(openvino.Core().available_devices)
    return found


def _installed(name: str) -> Any | None:
    """The module if it imports, else None: a runtime that is not installed is a finding (its field
    stays None and its check says so), not an error."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _probe_cuda(found: Platform) -> None:
    """CUDA driver/runtime versions and GPU count through cuda-python, else the toolkit's version file."""
    if found.cuda_python is not None and cuda_python_problem(found.cuda_python) is None:
        from runtime.backends.cuda_runtime import cuda_call, cuda_versions, import_cudart

        try:
            cudart = import_cudart()
            found.cuda = cuda_versions(cudart)
            found.gpus = int(cuda_call(cudart, cudart.cudaGetDeviceCount(), "cudaGetDeviceCount"))
        except EdgeDeeplabError as exc:
            found.gpu_error = str(exc)
    if not found.cuda and CUDA_VERSION_JSON.is_file():
        import json

        try:
            toolkit = json.loads(CUDA_VERSION_JSON.read_text())["cuda"]["version"]
        except (ValueError, KeyError, TypeError):
            toolkit = None  # an unreadable version file says nothing about CUDA; the GPU check reports it
        if toolkit is not None:
            found.cuda = {"toolkit": toolkit}


def checks(found: Platform) -> list[Check]:
    """One check per requirement, in the order a user would fix them."""
    out = [Check("python", "ok" if _version_tuple(found.python)[:2] >= (3, 10) else "fail", found.python,
                 "edge-deeplab needs Python 3.10 or later")]
    if found.onnxruntime:
        out.append(Check("onnxruntime", "ok", f"{found.onnxruntime} ({', '.join(found.onnxruntime_providers)})"))
    else:
        out.append(Check("onnxruntime", "fail", "not installed (onnx and onnxruntime bundles need it)",
                         "pip install edge-deeplab"))
    if found.openvino:
        out.append(Check("openvino", "ok", f"{found.openvino} ({', '.join(found.openvino_devices)})"))
    else:
        out.append(Check("openvino", "skip", "not installed; only openvino bundles need it "
                         "(pip install 'edge-deeplab[openvino]')"))
    out.append(_opencv_check(found))
    out += _jetson_checks(found)
    return out


def _opencv_check(found: Platform) -> Check:
    if found.opencv is None:
        return Check("opencv", "skip", "not installed; only video files, cameras and streams need it "
                     "(pip install 'edge-deeplab[video]'; on a Jetson apt install python3-opencv)")
    if found.opencv_gstreamer:
        return Check("opencv", "ok", f"{found.opencv} with GStreamer")
    if found.is_jetson:
        return Check("opencv", "fail", f"{found.opencv} without GStreamer: CSI cameras (nvarguscamerasrc) and "
                     "GStreamer pipelines will not open",
                     "use Ubuntu's OpenCV: pip uninstall opencv-python-headless && apt install python3-opencv")
    return Check("opencv", "ok", f"{found.opencv} without GStreamer (files, USB cameras and RTSP work; "
                 "GStreamer pipelines do not)")


def _jetson_checks(found: Platform) -> list[Check]:
    """L4T, TensorRT, cuda-python and the GPU: checked on a Jetson or wherever TensorRT is installed."""
    out = []
    if found.is_jetson:
        if found.l4t is None:
            out.append(Check("l4t", "fail", f"{found.jetson_model}: {TEGRA_RELEASE} is missing or unreadable",
                             f"mount or copy the host's {TEGRA_RELEASE}, or run on JetPack 6.1 or later"))
        elif _version_tuple(found.l4t)[:2] < MIN_L4T:
            out.append(Check("l4t", "fail", f"L4T {found.l4t} on {found.jetson_model}: TensorRT bundles need "
                             "JetPack 6.1 (L4T 36.4, TensorRT 10.3) or later", "flash JetPack 6.1 or 6.2"))
        else:
            out.append(Check("l4t", "ok", f"L4T {found.l4t} on {found.jetson_model}"))
    else:
        out.append(Check("l4t", "skip", f"not a Jetson ({DEVICE_TREE_MODEL} names no Jetson and "
                         f"{TEGRA_RELEASE} is absent)"))
    if not found.is_jetson and found.tensorrt is None:
        reason = (f"TensorRT is not installed here ({found.tensorrt_error}) and this is not a Jetson: "
                  "tensorrt bundles are built and run on the device")
        return out + [Check("tensorrt", "skip", reason)] + [
            Check(name, "skip", "not checked: only the TensorRT backend needs it (see tensorrt)")
            for name in ("cuda-python", "gpu")]
    if found.tensorrt is None:
        out.append(Check("tensorrt", "fail", f"does not import: {found.tensorrt_error}",
                         "in a container, run it with --runtime nvidia; on the host, apt install python3-libnvinfer"))
    elif _version_tuple(found.tensorrt)[0] != 10:
        out.append(Check("tensorrt", "fail", f"TensorRT {found.tensorrt}; the tensorrt target needs TensorRT 10",
                         "use JetPack 6.1/6.2 (TensorRT 10.3), or pip install 'tensorrt>=10,<11' on a desktop GPU"))
    else:
        out.append(Check("tensorrt", "ok", found.tensorrt))
    problem = cuda_python_problem(found.cuda_python)
    out.append(Check("cuda-python", "fail", problem, CUDA_PYTHON_INSTALL) if problem
               else Check("cuda-python", "ok", str(found.cuda_python)))
    if found.gpus:
        cuda = ", ".join(f"{k} {v}" for k, v in found.cuda.items())
        out.append(Check("gpu", "ok", f"{found.gpus} CUDA device(s), CUDA {cuda}"))
    elif problem:
        out.append(Check("gpu", "skip", "not probed: cuda-python is not usable (see above)"))
    else:
        out.append(Check("gpu", "fail", found.gpu_error or "no CUDA device visible",
                         "in a container, run it with --runtime nvidia (and check the host with nvidia-smi or tegrastats)"))
    return out


@dataclass
class Images:
    """The images a bundle is run on, and where they came from (said in the report)."""

    arrays: list[np.ndarray]
    source: str


def bundle_images(manifest: Any, count: int) -> Images:
    """The first ``count`` validation images of the dataset the bundle records, when readable here.

    A dataset path recorded on the workstation is usually absent on the device; then the built-in
    synthetic set is used, and the report says so and why.
    """
    from edge_deeplab.data.base import open_dataset

    recorded = [manifest.verification.get("miou", {}).get("dataset"), manifest.source.get("dataset")]
    why = "the bundle records no dataset"
    for spec in [s for s in recorded if isinstance(s, str) and s]:
        try:
            dataset = open_dataset(spec, "val")
        except (EdgeDeeplabError, OSError) as exc:
            why = f"its dataset {spec} is not readable here ({_first_line(exc)})"
            continue
        if len(dataset):
            picked = [dataset[i].image for i in range(min(count, len(dataset)))]
            return Images(picked, f"{len(picked)} validation image(s) of {spec}, the bundle's dataset")
        why = f"its dataset {spec} has no validation images"
    dataset = open_dataset("synthetic", "val")
    picked = [dataset[i].image for i in range(count)]
    return Images(picked, f"{count} image(s) of the built-in synthetic set ({why})")


def reference_segmenter(manifest: Any, bundle: Path) -> tuple[Any, str]:
    """The run a bundle's masks are compared with, and what it is.

    tensorrt: ONNX Runtime (CPU) on the bundle's own ONNX, the graph the engine was built from, with
    graph optimizations off (its exact Q/DQ semantics, which no CPU's integer kernels can alter).
    onnx/onnxruntime: the same ONNX in ONNX Runtime with graph optimizations off (the literal
    graph against the fused kernels the device runs). openvino: the same IR with f32 inference
    precision (exact) against the plugin's default precision (bf16/fp16 where the hardware has it).
    """
    import runtime
    from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
    from runtime.options import RuntimeOptions
    from runtime.segmenter import Segmenter

    if manifest.target == "tensorrt":
        if not manifest.files.get("model", "").endswith(".onnx"):
            raise EdgeDeeplabError("the bundle has no ONNX to run in ONNX Runtime")
        # Exact Q/DQ semantics (no fused integer kernels): what TensorRT computes, on any CPU.
        options = RuntimeOptions(ort_optimization="disable")
        backend = OnnxRuntimeBackend(manifest, bundle, options)
        return (Segmenter(manifest, bundle, backend, options),
                "ONNX Runtime (CPU) on the bundle's model.onnx with graph optimizations disabled")
    if manifest.target == "openvino":
        return runtime.load(bundle, ov_precision_hint="f32"), "the same IR in OpenVINO at f32 inference precision"
    return runtime.load(bundle, ort_optimization="disable"), "ONNX Runtime with graph optimizations disabled"


def check_bundle(bundle: Path, found: Platform, images: int, runs: int, warmup: int,
                 load_options: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    """Load, run, compare and time one bundle; every outcome is a dict with ``status`` and ``detail``."""
    import runtime
    from runtime.benchmark import measure
    from runtime.manifest import read_manifest

    result: dict[str, Any] = {"bundle": str(bundle)}
    try:
        manifest = read_manifest(bundle)
    except EdgeDeeplabError as exc:
        return {**result, "status": "fail", "detail": str(exc), "fix": "re-copy or re-export the bundle"}
    result.update(target=manifest.target, precision=manifest.precision)
    if manifest.target == "tensorrt" and found.tensorrt is None:
        return {**result, "status": "skip",
                "detail": f"TensorRT is not importable here ({found.tensorrt_error}); run doctor on the device"}
    if manifest.target == "openvino" and found.openvino is None:
        return {**result, "status": "skip", "detail": "OpenVINO is not installed here (pip install 'edge-deeplab[openvino]')"}
    try:
        log(f"loading {bundle} ({manifest.target} {manifest.precision})")
        start = time.perf_counter()
        segmenter = runtime.load(bundle, **load_options)
        result["load_s"] = round(time.perf_counter() - start, 3)  # includes a TensorRT engine build
        with segmenter:
            picked = bundle_images(manifest, images)
            result["images"] = picked.source
            masks = [np.array(segmenter.predict(image)) for image in picked.arrays]
            reference, what = reference_segmenter(manifest, bundle)
            with reference:
                expected = [reference.predict(image) for image in picked.arrays]
            agreement = float(np.mean([(m == e).mean() for m, e in zip(masks, expected)]))
            floor = min_agreement(manifest)
            result.update(reference=what, agreement=round(agreement, 5), min_agreement=floor)
            stats = measure(segmenter, picked.arrays, runs=runs, warmup=warmup, name=bundle.name)
            result["latency_ms"] = {"p50": round(stats.p50_ms, 3), "p90": round(stats.p90_ms, 3),
                                    "runs": stats.runs, "warmup": stats.warmup}
    except EdgeDeeplabError as exc:
        return {**result, "status": "fail", "detail": str(exc)}
    ok = agreement >= floor
    result["status"] = "ok" if ok else "fail"
    result["detail"] = (f"mask agreement {agreement:.4f} with {what} (needs {floor}), p50 {stats.p50_ms:.2f} ms, "
                        f"load {result['load_s']:.1f} s; {picked.source}")
    if manifest.target == "onnxruntime" and manifest.precision == "int8":
        result["int8_kernels"] = int8_kernels_here(manifest)[1]
    if not ok:
        cause, result["fix"] = disagreement_cause(manifest, bundle)
        result["detail"] += f"; cause: {cause}"
    return result


def min_agreement(manifest: Any) -> float:
    """The mask agreement a bundle must reach against its reference run (see MIN_AGREEMENT): for an
    onnxruntime INT8 bundle, what its export measured on exact kernels (see INT8_MARGIN)."""
    if manifest.target == "tensorrt" and manifest.precision == "int8":
        return MIN_AGREEMENT_TENSORRT_INT8
    measured = (manifest.int8_kernels or {}).get("fused_vs_exact") or {}
    if manifest.target == "onnxruntime" and measured.get("kernels_exact") is True:
        expected = measured.get("lowest_image", measured["agreement"])
        return round(min(MIN_AGREEMENT["int8"], expected - INT8_MARGIN), 4)
    return MIN_AGREEMENT[manifest.precision]


def int8_kernels_here(manifest: Any, cpu: Any = None) -> tuple[bool, str]:
    """Whether this CPU's integer kernels may saturate an onnxruntime INT8 bundle's sums, and why."""
    from runtime.cpu import cpu_info, saturating_weights

    cpu = cpu or cpu_info()
    if saturating_weights(manifest, cpu) is not None:
        record = manifest.int8_kernels or {}
        convs = f"{record['convs_over_int16']} of its convs" if "convs_over_int16" in record else "its convs"
        return True, (f"may saturate: {cpu.model} has no VNNI, and {convs} can overflow a 16-bit pair sum "
                      "(8-bit weights)")
    if cpu.int8_pairs_saturate is False:
        return False, f"exact: {cpu.describe_int8()}"
    return False, "exact: the bundle's 7-bit weights cannot overflow this CPU's 16-bit pair sums"


def disagreement_cause(manifest: Any, bundle: Path, cpu: Any = None) -> tuple[str, str]:
    """(cause, fix) for masks that differ from the reference more than they should.

    For an onnxruntime INT8 bundle the CPU tells which: kernels that may saturate (x86 without
    VNNI, 8-bit weights) are the device's doing; kernels that compute the sums exactly leave only
    rounding, so a low agreement is the model's near-tied class scores, not this machine.
    """
    if manifest.target == "onnxruntime" and manifest.precision == "int8":
        saturates, kernels = int8_kernels_here(manifest, cpu)
        if saturates:
            return (f"this CPU's integer kernels ({kernels})",
                    "re-export the bundle with this edge-deeplab (its 7-bit weights run exactly on every CPU), "
                    "or run it on a CPU with VNNI (AVX512-VNNI, AVX-VNNI or AMX)")
        return (f"the model, not this CPU ({kernels}): INT8 rounding moves pixels whose class scores are "
                "near-ties, which a well-trained model has few of",
                f"measure what INT8 costs with 'edge-deeplab evaluate {bundle} --data DATASET' against the FP32 "
                "bundle; if it is too much, re-export with --max-drop POINTS (the most sensitive layers stay float)")
    if manifest.precision == "int8":
        return ("INT8 kernels differ from the reference more than rounding explains",
                "re-export the bundle; for int8 try --max-drop or another --calib-method")
    return ("the bundle computes something else than its reference (a damaged or mismatched build)",
            "re-export the bundle")
