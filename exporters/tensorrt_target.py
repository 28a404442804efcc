"""What a TensorRT bundle carries beside its ONNX: the build settings, a README with the
``trtexec`` line, and the engine itself when TensorRT is installed here (else it is built on the
device at first load)."""

from __future__ import annotations

from pathlib import Path

from exporters.onnx import INPUT_NAME
from exporters.session import ExportSession
from runtime.files import atomic_write_text


def tensorrt_extras(session: ExportSession, onnx_path: Path) -> dict[str, str]:
    """Write the TensorRT extras into the bundle; returns the manifest's files they add."""
    from exporters import tensorrt as trtx

    req = session.req
    settings = trtx.export_settings(req.precision, req.height, req.width, req.dynamic, INPUT_NAME)
    command = settings.trtexec_command(onnx_path.name)
    session.extra.update({"trtexec": command, "tensorrt_build": settings.record(),
                          "tensorrt_profile": trtx.profile_record(req.height, req.width, req.dynamic),
                          "engine_built_here": False, "explicit_quantization": req.precision == "int8"})
    atomic_write_text(session.bundle / "README.txt", trtx.readme(command, req.precision))
    files = {"readme": "README.txt"}
    if req.precision == "fp16":
        session.verification["tensorrt_fp16"] = ("FP16 is a TensorRT build flag: the ONNX is the verified FP32 "
                                                 "graph; the engine is built and run on the device")
    if trtx.have_tensorrt():
        session.step("building the TensorRT engine (this takes minutes)")
        identity = trtx.build_here(onnx_path, settings, session.bundle)
        session.extra.update({"engine_built_here": True, "engine_built_for": identity.as_dict()})
        files["engine"] = trtx.ENGINE_NAME
    else:
        req.log("    tensorrt is not installed here: the engine is built on the device at first load "
                f"(or by hand: {command})")
    return files
