"""TensorRT: the ONNX TensorRT builds (plain for FP32/FP16, explicit Q/DQ for INT8) and the build.

An engine is tied to the GPU and the TensorRT version that built it, so the portable artefact is
the ONNX plus the exact build command. The exporter only chooses the settings (precision and the
optimization profile for the export size); building is the runtime's
(:mod:`runtime.backends.tensorrt_build`), so the engine built here where the ``tensorrt`` package
(10.x) imports, the one the runtime builds on first load, and the ``trtexec`` line in the bundle's
README come from the same :class:`~runtime.backends.tensorrt_build.BuildSettings`. INT8 uses
explicit quantization only: TensorRT 10 deprecated implicit INT8 calibration and TensorRT 11
removed it. For a Q/DQ network the FP16 flag is set too, so the layers left in float (the ones
TensorRT does not fuse into INT8 kernels) run in FP16 rather than FP32.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from runtime.backends.cuda_runtime import gpu_name_and_capability, import_cudart
from runtime.backends.tensorrt_build import ENGINE_NAME, TIMING_CACHE_NAME, BuildSettings, build_engine
from runtime.backends.tensorrt_engines import DeviceIdentity
from runtime.files import atomic_write_bytes

Shape = tuple[int, int, int, int]


def profile_for(height: int, width: int, dynamic: bool) -> tuple[Shape, Shape, Shape]:
    """Static: the one shape. Dynamic: a quarter to twice the export size, tuned for the export size.

    The lower bound stays >= 33 px so the stride-32 feature map of the backbone is at least 2x2;
    batch is 1 (the latency case this tool is for).
    """
    opt = (1, 3, height, width)
    if not dynamic:
        return opt, opt, opt
    return (1, 3, max(33, height // 4), max(33, width // 4)), opt, (1, 3, 2 * height, 2 * width)


def profile_record(height: int, width: int, dynamic: bool) -> dict[str, list[int]]:
    """The profile as the manifest's ``extra["tensorrt_profile"]`` records it (static bundles too)."""
    return dict(zip(("min", "opt", "max"), map(list, profile_for(height, width, dynamic))))


def export_settings(precision: str, height: int, width: int, dynamic: bool, input_name: str) -> BuildSettings:
    """The build settings a bundle records; a static input needs no profile (the ONNX fixes it)."""
    profile = profile_for(height, width, dynamic)
    return BuildSettings(precision=precision, input_name=input_name, profile=profile if dynamic else None)


def readme(command: str, precision: str) -> str:
    """README.txt of a TensorRT bundle: what is in it and how to build the engine by hand."""
    quant = ("The ONNX carries explicit QuantizeLinear/DequantizeLinear (INT8, calibrated on the host); "
             "TensorRT fuses them into INT8 kernels.\n") if precision == "int8" else ""
    return (
        f"edge-deeplab TensorRT bundle ({precision}).\n\n"
        "model.onnx is the network TensorRT builds an engine from. An engine only runs on the GPU and\n"
        "TensorRT version that built it, so it is built on the device: 'edge-deeplab infer' does it on\n"
        "first use and caches it ('edge-deeplab doctor BUNDLE' builds it and checks it against ONNX\n"
        "Runtime). To build it by hand, in this folder:\n\n"
        f"    {command}\n\n{quant}"
    )


def have_tensorrt() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def build_here(onnx_path: Path, settings: BuildSettings, bundle: Path) -> DeviceIdentity:
    """Build ``model.engine`` (and ``timing.cache``) into ``bundle`` on this machine's GPU.

    Returns the device the engine is for, which the manifest records so that another device
    rebuilds instead of trying to deserialize it.
    """
    import tensorrt as trt

    identity = DeviceIdentity(*gpu_name_and_capability(import_cudart()), trt.__version__)
    atomic_write_bytes(bundle / ENGINE_NAME, build_engine(onnx_path, settings, bundle / TIMING_CACHE_NAME))
    return identity
