"""The versions of the tools that shaped a bundle, recorded in its manifest."""

from __future__ import annotations

import platform
from importlib import metadata


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
