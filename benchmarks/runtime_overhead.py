"""How much the runtime adds around the backend, what ``import runtime`` costs, and RSS.

    python benchmarks/runtime_overhead.py BUNDLE [--runs 50] [--size 513 513]

Times ``Segmenter.predict`` on one image (convert, resize/pad, normalize, infer, crop, argmax,
resize the mask) against the backend's own session call on the already-prepared tensor of the
same bundle, interleaved in one process so both see the same machine. Aim: the runtime adds
<= 10 % (ratio <= 1.10). Also prints the ``import runtime`` time (fresh interpreter), the resident
memory after loading the bundle (give it an INT8 bundle for the device figure) and checks that
torch was never imported. Torch-free itself: it runs on the device.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import runtime  # noqa: E402
from runtime.benchmark import compare, format_table  # noqa: E402


def rss_mib() -> float:
    """Resident set size of this process in MiB (Linux /proc; ru_maxrss elsewhere)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def import_time_ms(repeats: int = 5) -> float:
    """Best of a few fresh interpreters timing ``import runtime`` (the disk cache is warm after one)."""
    code = "import time; t = time.perf_counter(); import runtime; print((time.perf_counter() - t) * 1000)"
    times = [
        float(subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout)
        for _ in range(repeats)
    ]
    return min(times)


def raw_session_call(seg: runtime.Segmenter, tensor: np.ndarray) -> Callable[[Any], Any]:
    """The backend library's own inference call on a prepared input, nothing of the runtime around it."""
    backend = seg.backend
    if backend.name == "onnxruntime":
        session, feed, outputs = backend.session, {seg.manifest.input.name: tensor}, seg.manifest.outputs[:1]
        return lambda _image: session.run(outputs, feed)
    if backend.name == "openvino":
        request = backend.request
        return lambda _image: request.infer({0: tensor}, share_inputs=True)
    return lambda _image: backend.run(tensor, seg.manifest.outputs[0])  # TensorRT: the backend is the raw binding


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--size", type=int, nargs=2, default=(513, 513), metavar=("H", "W"))
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()

    print(f"import runtime: {import_time_ms():.0f} ms (fresh interpreter, best of 5)")
    before = rss_mib()
    seg = runtime.load(args.bundle, threads=args.threads)
    after = rss_mib()
    m = seg.manifest
    print(f"bundle {args.bundle.name}: {m.target}/{m.precision}, input {m.input.shape} {m.input.dtype}")
    print(f"RSS: {before:.0f} MiB before load, {after:.0f} MiB after loading the bundle")

    image = np.random.default_rng(0).integers(0, 256, (*args.size, 3), dtype=np.uint8)
    tensor = seg.prepare(image)[0][None]
    stats = compare(
        {"runtime predict": seg.predict, "raw session call": raw_session_call(seg, tensor)},
        [image],
        runs=args.runs,
        warmup=args.warmup,
    )
    print(format_table(stats))
    ratio = stats[0].p50_ms / stats[1].p50_ms
    print(f"runtime / raw (p50): {ratio:.3f}  -> adds {100 * (ratio - 1):.1f} % (aim <= 10 %)")
    print(f"RSS after the runs: {rss_mib():.0f} MiB")
    heavy = [name for name in ("torch", "onnx", "nncf") if name in sys.modules]
    print("torch/onnx/nncf imported: " + (", ".join(heavy) if heavy else "none"))
    seg.close()
    sys.exit(1 if heavy else 0)


if __name__ == "__main__":
    main()
