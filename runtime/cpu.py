"""What this CPU offers for INT8, read from the operating system (no vendor package needed).

ONNX Runtime picks its integer kernels by CPU feature, and they do not all compute the same sums:

- x86 with a VNNI instruction (AVX512-VNNI, AVX-VNNI) or AMX: u8 x s8 dot products accumulate in
  32 bits (VPDPBUSD, TDPBUSD): exact.
- x86 with only AVX2, or AVX-512 without VNNI: VPMADDUBSW multiplies u8 by s8 and adds each pair of
  products into a 16-bit integer that saturates at 32767. Two full-range products reach
  255 x 127 x 2 = 64,770, so 8-bit weights can lose; 7-bit weights (|w| <= 64: 32,640) cannot.
- ARM64 (a Jetson's Cortex-A78AE, a Raspberry Pi): UDOT/SDOT (dotprod), UMMLA/SMMLA (i8mm) or, on
  cores with neither, UMULL + UADALP (16-bit products, 32-bit accumulation): exact.

:func:`cpu_info` says which of these applies here; the runtime warns when a bundle's weights can
saturate on this CPU, and ``doctor``, ``benchmark --json`` and the report print the features.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from runtime.manifest import Manifest

CPUINFO = Path("/proc/cpuinfo")
# Linux /proc/cpuinfo flag -> the name users know, for the INT8-relevant features only.
X86_FEATURES = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "AVX512-VNNI", "avx_vnni": "AVX-VNNI",
                "amx_int8": "AMX-INT8"}
ARM_FEATURES = {"asimddp": "dotprod", "i8mm": "i8mm"}
# Any of these gives ONNX Runtime a u8 x s8 kernel that accumulates in 32 bits on x86.
X86_EXACT_INT8 = ("AVX512-VNNI", "AVX-VNNI", "AMX-INT8")
# macOS sysctl names -> the same feature names.
_MACOS_FEATURES = {"hw.optional.avx2_0": "AVX2", "hw.optional.avx512f": "AVX-512",
                   "hw.optional.arm.FEAT_DotProd": "dotprod", "hw.optional.arm.FEAT_I8MM": "i8mm"}


@dataclass(frozen=True)
class CpuInfo:
    """The CPU's model name and INT8-relevant features (``known`` False: the OS did not say)."""

    model: str
    arch: str
    features: tuple[str, ...]
    known: bool = True

    @property
    def is_x86(self) -> bool:
        return self.arch.lower() in ("x86_64", "amd64", "i386", "i686", "x86")

    @property
    def int8_pairs_saturate(self) -> bool | None:
        """True where ONNX Runtime adds u8 x s8 products in 16-bit pairs (x86 without VNNI/AMX),
        False where it accumulates in 32 bits, None when the features could not be read."""
        if not self.is_x86:
            return False
        if not self.known:
            return None
        return not any(f in self.features for f in X86_EXACT_INT8)

    def describe_int8(self) -> str:
        """One phrase for reports: the features and what they mean for INT8."""
        listed = ", ".join(self.features) if self.features else "none of " + ", ".join(
            [*X86_FEATURES.values()] if self.is_x86 else [*ARM_FEATURES.values()])
        if not self.known:
            return f"INT8 features unknown (not readable on {platform.system() or 'this OS'})"
        saturate = self.int8_pairs_saturate
        kernels = ("u8 x s8 pairs add in 16 bits (saturate with 8-bit weights)" if saturate
                   else "INT8 dot products accumulate in 32 bits")
        return f"{listed}: {kernels}"

    def to_dict(self) -> dict[str, object]:
        return {"model": self.model, "arch": self.arch, "int8_features": list(self.features),
                "features_known": self.known, "int8_pairs_saturate": self.int8_pairs_saturate}


def parse_cpuinfo(text: str, arch: str) -> CpuInfo:
    """Read a Linux ``/proc/cpuinfo``: the model name and the flags (x86) or Features (ARM)."""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    table = ARM_FEATURES if arch.lower() in ("aarch64", "arm64") or "asimd" in flags else X86_FEATURES
    features = tuple(name for flag, name in table.items() if flag in flags)
    return CpuInfo(model or platform.processor() or "unknown CPU", arch, features, known=bool(flags))


def _macos_info(arch: str) -> CpuInfo:
    def sysctl(name: str) -> str:
        try:
            return subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    features = tuple(name for key, name in _MACOS_FEATURES.items() if sysctl(key) == "1")
    # No macOS x86 CPU has VNNI except a few Ice Lake laptops; sysctl's leaf-7 list says so.
    if "AVX512VNNI" in sysctl("machdep.cpu.leaf7_features").split():
        features += ("AVX512-VNNI",)
    return CpuInfo(sysctl("machdep.cpu.brand_string") or platform.processor() or "unknown CPU", arch, features)


@functools.lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """This machine's CPU, read once per process."""
    arch = platform.machine() or "unknown"
    if CPUINFO.is_file():
        try:
            return parse_cpuinfo(CPUINFO.read_text(errors="replace"), arch)
        except OSError:
            pass  # unreadable (a locked-down container): fall back as where there is no /proc
    if platform.system() == "Darwin":
        return _macos_info(arch)
    return CpuInfo(platform.processor() or "unknown CPU", arch, (), known=False)


def saturating_weights(manifest: Manifest, cpu: CpuInfo | None = None) -> str | None:
    """What in a CPU INT8 bundle can saturate this CPU's 16-bit pair sums, or None when the CPU
    computes its integer sums exactly.

    onnxruntime bundles say so in ``int8_kernels`` (schema 3); older ones carry no such record,
    and their quantizer settings tell whether the weights were 7-bit (``reduce_range``) or 8-bit.
    openvino bundles are exact everywhere when NNCF's overflow fix covered every convolution.
    """
    if manifest.precision != "int8" or manifest.target not in ("onnxruntime", "openvino"):
        return None
    if (cpu or cpu_info()).int8_pairs_saturate is False:
        return None
    calibration = manifest.calibration or {}
    record = manifest.int8_kernels
    if manifest.target == "openvino":
        if calibration.get("overflow_fix") == "enable":
            return None
        return "its 8-bit weights (NNCF's overflow fix did not cover every convolution)"
    if record is None:
        if (calibration.get("settings") or {}).get("reduce_range"):
            return None
        return "its 8-bit weights (made before edge-deeplab recorded which CPUs run a bundle exactly)"
    if record.get("runs_exactly_on") == "any":
        return None
    return f"its 8-bit weights ({record.get('convs_over_int16', 'some')} convs can overflow a 16-bit pair sum)"


def int8_saturation_warning(manifest: Manifest, bundle: str, cpu: CpuInfo | None = None) -> str | None:
    """One line when this CPU cannot compute a CPU INT8 bundle's integer sums exactly
    (:func:`saturating_weights`): the cause, the expected loss and the fix."""
    cpu = cpu or cpu_info()
    why = saturating_weights(manifest, cpu)
    if why is None:
        return None
    here = (f"this CPU ({cpu.model}) has no VNNI" if cpu.int8_pairs_saturate
            else "this CPU's INT8 features could not be read")
    return (f"warning: {bundle}: {why} need VNNI; {here}, so the integer kernels may saturate and lose "
            f"accuracy (about a mIoU point on the models measured; 'edge-deeplab doctor {bundle}' measures "
            "it here); re-export with this edge-deeplab: its 7-bit weights run exactly on every CPU")


_WARNED: set[str] = set()


def warn_if_int8_saturates(manifest: Manifest, bundle: str) -> None:
    """Print :func:`int8_saturation_warning` on stderr, once per bundle and process (a report or
    a doctor run loads the same bundle several times)."""
    warning = int8_saturation_warning(manifest, bundle)
    if warning and bundle not in _WARNED:
        _WARNED.add(bundle)
        print(f"edge-deeplab: {warning}", file=sys.stderr, flush=True)


ISA_CAP_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")


def isa_cap_warning() -> str | None:
    """A warning when oneDNN's ISA cap is set in the environment, for OpenVINO's sake.

    The cap makes torch run its AVX2 paths, which is how this project times a slower CPU's
    training on a faster one. OpenVINO's CPU plugin reads it too but still chooses its kernels by
    the CPU it finds, and they disagree: on a 2-core AMD EPYC with AVX-512 VNNI and
    ``ONEDNN_MAX_CPU_ISA=AVX2``, an OpenVINO INT8 bundle's masks agreed with its own uncapped run on
    0.14 of pixels (mIoU 4 % against 68 %), and FP16 IRs failed to run ("Convolution node ... is not
    initialized"). A real AVX2-only CPU is not affected.
    """
    found = [f"{name}={os.environ[name]}" for name in ISA_CAP_VARIABLES if os.environ.get(name)]
    if not found:
        return None
    return (f"warning: {' and '.join(found)} is set: OpenVINO's CPU plugin reads it too and can then compute wrong "
            "results on a CPU with more than that instruction set (INT8 masks 0.14 in agreement, FP16 "
            "models failing, on an AVX-512 VNNI CPU); unset it for OpenVINO, it is meant for torch's "
            "timing of a slower CPU")


def warn_if_isa_capped() -> None:
    """Print :func:`isa_cap_warning` on stderr, once per process."""
    warning = isa_cap_warning()
    if warning and "isa-cap" not in _WARNED:
        _WARNED.add("isa-cap")
        print(f"edge-deeplab: {warning}", file=sys.stderr, flush=True)
