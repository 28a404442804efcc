"""Backends: the one piece of the runtime that knows a vendor API. Each is imported only when a
bundle of its target is loaded, so a device needs only the package for its own bundles."""

from __future__ import annotations

from pathlib import Path

from runtime.backends.base import Backend
from runtime.errors import EdgeDeeplabError
from runtime.manifest import TARGET_BACKEND, Manifest
from runtime.options import RuntimeOptions

# backend name -> (module, class, pip extra that installs its package)
_BACKENDS = {
    "onnxruntime": ("runtime.backends.onnxruntime_backend", "OnnxRuntimeBackend", "edge-deeplab"),
    "openvino": ("runtime.backends.openvino_backend", "OpenVinoBackend", "edge-deeplab[openvino]"),
    "tensorrt": ("runtime.backends.tensorrt_backend", "TensorRtBackend", "edge-deeplab[tensorrt]"),
}


def open_backend(manifest: Manifest, bundle_dir: Path, options: RuntimeOptions) -> Backend:
    """Import the bundle's backend and load its model; a missing package is one clear line."""
    import importlib

    name = TARGET_BACKEND[manifest.target]
    module_name, class_name, extra = _BACKENDS[name]
    module = importlib.import_module(module_name)
    try:
        return getattr(module, class_name)(manifest, bundle_dir, options)
    except ModuleNotFoundError as exc:
        if name == "tensorrt" and (exc.name or "").split(".")[0] == "tensorrt":
            # On a CPU host pip cannot help: TensorRT needs an NVIDIA GPU, and the engine is built where it runs.
            raise EdgeDeeplabError(
                f"{bundle_dir} is a tensorrt bundle: it runs on the Jetson (or another NVIDIA GPU with TensorRT), "
                "and this machine has no TensorRT; copy the bundle there, or export --target onnx or openvino for a CPU"
            ) from None
        raise EdgeDeeplabError(
            f"target {manifest.target} needs the {exc.name} package, which is not installed: pip install '{extra}'"
        ) from None


__all__ = ["Backend", "open_backend"]
