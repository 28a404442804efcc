"""cuda-python for the TensorRT backend: importing it, checking its version, naming this GPU.

The bindings must be of the CUDA major version the device's driver runs: cuda-python 13 needs an
NVIDIA driver 580 or later, while JetPack 6 (L4T r36) ships the CUDA 12.6 driver, so on a Jetson
the 12.x line (12.6 or later) is the one that works; a 13.x install imports fine and fails at the
first CUDA call. The version is checked at import, where the message can still say what to install.
No TensorRT or CUDA import happens at module level: ``edge-deeplab doctor`` reads the version on
machines that have neither.
"""

from __future__ import annotations

import re
from importlib import metadata
from typing import Any

from runtime.errors import EdgeDeeplabError

CUDA_PYTHON_REQUIREMENT = ">=12.6,<13"
CUDA_PYTHON_INSTALL = f"pip install 'cuda-python{CUDA_PYTHON_REQUIREMENT}'"


def cuda_python_version() -> str | None:
    """The installed cuda-python version (``cuda-bindings`` since 12.8 carries the modules)."""
    for dist in ("cuda-bindings", "cuda-python"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def cuda_python_problem(version: str | None) -> str | None:
    """Why this cuda-python version cannot drive a JetPack 6 GPU, or ``None`` when it can."""
    if version is None:
        return f"cuda-python is not installed; the tensorrt target needs cuda-python{CUDA_PYTHON_REQUIREMENT}"
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        return f"cannot read the cuda-python version {version!r}; the tensorrt target needs {CUDA_PYTHON_REQUIREMENT}"
    major, minor = int(match.group(1)), int(match.group(2))
    if (major, minor) < (12, 6) or major >= 13:
        return (f"cuda-python {version} is installed; the tensorrt target needs cuda-python{CUDA_PYTHON_REQUIREMENT} "
                "(the 12.x bindings that JetPack 6's CUDA 12.6 driver runs)")
    return None


def import_cudart() -> Any:
    """cuda-python's runtime API (``cuda.bindings.runtime``, or ``cuda.cudart`` before 12.6.1)."""
    problem = cuda_python_problem(cuda_python_version())
    if problem is not None:
        raise EdgeDeeplabError(f"{problem}: {CUDA_PYTHON_INSTALL}")
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as exc:
            raise EdgeDeeplabError(
                f"cuda-python {cuda_python_version()} is installed but does not import ({exc}); "
                f"reinstall it: {CUDA_PYTHON_INSTALL}"
            ) from None
    return cudart


def cuda_call(cudart: Any, result: Any, what: str) -> Any:
    """Unpack a cuda-python ``(error, value...)`` tuple, raising on any CUDA error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        raise EdgeDeeplabError(f"CUDA error in {what}: {err}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def gpu_name_and_capability(cudart: Any) -> tuple[str, str]:
    """The current GPU's name and compute capability ("8.7" on an Orin)."""
    device = cuda_call(cudart, cudart.cudaGetDevice(), "cudaGetDevice")
    props = cuda_call(cudart, cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return name.rstrip("\x00").strip(), f"{props.major}.{props.minor}"


def cuda_versions(cudart: Any) -> dict[str, str]:
    """CUDA driver and runtime versions as "12.6" strings (cuda-python encodes them as 12060)."""

    def text(code: int) -> str:
        return f"{code // 1000}.{(code % 1000) // 10}"

    return {
        "driver": text(cuda_call(cudart, cudart.cudaDriverGetVersion(), "cudaDriverGetVersion")),
        "runtime": text(cuda_call(cudart, cudart.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion")),
    }
