"""TensorRT: the ONNX TensorRT builds (plain for FP32/FP16, explicit Q/DQ for INT8) and the build.

An engine is tied to the GPU and the TensorRT version that built it, so the portable artefact is
the ONNX plus the exact build command. Where the ``tensorrt`` Python package (10.x) imports, the
engine is also built here with its Python API (same flags as the command); elsewhere the runtime
builds and caches it on the device at first load (``extra.trtexec`` and ``README.txt`` say how to
build it by hand). INT8 uses explicit quantization only: TensorRT 10 deprecated implicit INT8
calibration and TensorRT 11 removed it. For a Q/DQ network the FP16 flag is set too, so the layers
left in float (the ones TensorRT does not fuse into INT8 kernels) run in FP16 rather than FP32.
"""

from __future__ import annotations

import importlib.util
import shlex
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import EdgeDeeplabError

ENGINE_NAME = "model.engine"
TIMING_CACHE_NAME = "timing.cache"


@dataclass(frozen=True)
class Profile:
    """The optimization profile: input shapes (N, C, H, W) TensorRT tunes for and accepts."""

    min: tuple[int, int, int, int]
    opt: tuple[int, int, int, int]
    max: tuple[int, int, int, int]

    def as_dict(self) -> dict:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


def profile_for(height: int, width: int, dynamic: bool) -> Profile:
    """Static: the one shape. Dynamic: a quarter to twice the export size, tuned for the export size.

    The lower bound stays >= 33 px so the stride-32 feature map of the backbone is at least 2x2;
    batch is 1 (the latency case this tool is for).
    """
    opt = (1, 3, height, width)
    if not dynamic:
        return Profile(opt, opt, opt)
    return Profile((1, 3, max(33, height // 4), max(33, width // 4)), opt, (1, 3, 2 * height, 2 * width))


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(v) for v in shape)


def trtexec_command(onnx_name: str, precision: str, profile: Profile, dynamic: bool, input_name: str) -> str:
    """The ``trtexec`` line that builds this bundle's engine on a device."""
    args = ["trtexec", f"--onnx={onnx_name}", f"--saveEngine={ENGINE_NAME}", f"--timingCacheFile={TIMING_CACHE_NAME}"]
    if precision == "fp16":
        args.append("--fp16")
    elif precision == "int8":
        args += ["--fp16", "--int8"]
    if dynamic:
        args += [
            f"--minShapes={input_name}:{_shape(profile.min)}",
            f"--optShapes={input_name}:{_shape(profile.opt)}",
            f"--maxShapes={input_name}:{_shape(profile.max)}",
        ]
    return shlex.join(args)


def readme(command: str, precision: str) -> str:
    """README.txt of a TensorRT bundle: what is in it and how to build the engine by hand."""
    quant = ("The ONNX carries explicit QuantizeLinear/DequantizeLinear (INT8, calibrated on the host); "
             "TensorRT fuses them into INT8 kernels.\n") if precision == "int8" else ""
    return (
        f"edge-deeplab TensorRT bundle ({precision}).\n\n"
        "model.onnx is the network TensorRT builds an engine from. An engine only runs on the GPU and\n"
        "TensorRT version that built it, so it is built on the device: 'edge-deeplab infer' does it on\n"
        "first use and caches it. To build it by hand, in this folder:\n\n"
        f"    {command}\n\n{quant}"
    )


def have_tensorrt() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def tensorrt_version() -> str | None:
    if not have_tensorrt():
        return None
    import tensorrt

    return str(tensorrt.__version__)


def build_engine(onnx_path: Path, engine_path: Path, cache_path: Path, precision: str, profile: Profile,
                 dynamic: bool, input_name: str) -> None:
    """Build and serialize an engine with TensorRT's Python API (the same flags as the command)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EdgeDeeplabError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    if dynamic:
        opt_profile = builder.create_optimization_profile()
        opt_profile.set_shape(input_name, profile.min, profile.opt, profile.max)
        config.add_optimization_profile(opt_profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EdgeDeeplabError(f"TensorRT failed to build an engine from {onnx_path.name} (see its log above)")
    engine_path.write_bytes(bytes(serialized))
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
