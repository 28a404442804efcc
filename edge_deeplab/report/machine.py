"""The machine a report's latencies belong to: CPU, cores, memory, board, and package versions.

Read from /proc and package metadata, never by importing the packages (torch would take seconds,
and on a device it is not there), so the report header names the machine honestly and cheaply.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from runtime.cpu import cpu_info

VERSION_PACKAGES = ("numpy", "onnxruntime", "openvino", "nncf", "onnx", "torch", "tensorrt", "opencv-python",
                    "opencv-python-headless", "edge-deeplab")


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def machine_info() -> dict[str, Any]:
    """CPU model and INT8 features, cores, memory, OS and (on a Jetson) the board: what the
    latencies belong to, and which integer kernels produced an INT8 row's mIoU."""
    cpu = cpu_info()
    info: dict[str, Any] = {
        "cpu": cpu.model,
        "int8_features": list(cpu.features),
        "int8_kernels": cpu.describe_int8(),
        "architecture": platform.machine(),
        "cores": os.cpu_count(),
        "os": platform.platform(),
    }
    if hasattr(os, "sched_getaffinity"):
        info["cores_usable"] = len(os.sched_getaffinity(0))
    for line in _read_text("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            info["memory_gb"] = round(int(line.split()[1]) / 1024**2, 1)
    board = _read_text("/proc/device-tree/model").strip("\x00\n ")
    if board:
        info["board"] = board
    return info


def package_versions() -> dict[str, str]:
    """Installed versions, read from package metadata (importing torch just to ask would be slow
    and, on a device, impossible)."""
    versions = {"python": platform.python_version()}
    for name in VERSION_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
