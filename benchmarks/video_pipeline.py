"""Does the threaded video pipeline keep up with the model?

    python benchmarks/video_pipeline.py BUNDLE [--frames 60] [--size 480 640]

Generates a 640x480 clip (moving colour blocks, mp4v) in a temporary folder, then measures, in
one process and alternating: (a) predict-only fps on the already decoded frames, and (b) the full
pipeline fps (decode -> infer -> overlay + encode, threads with bounded queues). Aim: pipeline /
predict-only >= 0.95, i.e. decoding and encoding are hidden behind inference. Torch-free.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import runtime  # noqa: E402
from runtime.sources import capture_frames, open_capture  # noqa: E402
from runtime.video import run_video  # noqa: E402


def make_clip(path: Path, frames: int, height: int, width: int) -> list[np.ndarray]:
    """Write the test clip and return its frames as RGB (what predict-only is timed on)."""
    import cv2

    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, (height // 16 + 2, width // 16 + 2, 3), dtype=np.uint8)
    base = tiles.repeat(16, 0).repeat(16, 1)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (width, height))
    rgb_frames = []
    for i in range(frames):
        dy, dx = (2 * i) % 32, (3 * i) % 32
        rgb = np.ascontiguousarray(base[dy : dy + height, dx : dx + width])
        rgb_frames.append(rgb)
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return rgb_frames


def predict_only_fps(seg: runtime.Segmenter, frames: list[np.ndarray]) -> float:
    start = time.perf_counter()
    for frame in frames:
        seg.predict(frame)
    return len(frames) / (time.perf_counter() - start)


def pipeline_fps(seg: runtime.Segmenter, clip: Path, out: Path) -> tuple[float, str]:
    cap = open_capture(str(clip), "video")
    try:
        stats = run_video(capture_frames(cap), seg.predict, seg.palette, out, fps=30.0)
    finally:
        cap.release()
    return stats.fps, stats.summary()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=2, help="alternating rounds of both measurements")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, runtime.load(args.bundle, threads=args.threads) as seg:
        clip = Path(tmp) / "clip.mp4"
        frames = make_clip(clip, args.frames, *args.size)
        for frame in frames[:3]:
            seg.predict(frame)  # warm-up
        only, piped, summary = [], [], ""
        for round_ in range(args.repeats):
            only.append(predict_only_fps(seg, frames))
            fps, summary = pipeline_fps(seg, clip, Path(tmp) / f"out{round_}.mp4")
            piped.append(fps)
        a, b = statistics.median(only), statistics.median(piped)
        print(f"bundle {args.bundle.name}: {seg.manifest.target}/{seg.manifest.precision}, "
              f"{args.frames} frames of {args.size[1]}x{args.size[0]}")
        print(f"predict-only: {a:.1f} fps   pipeline: {b:.1f} fps   ratio {b / a:.2f} (aim >= 0.95)")
        print("last pipeline run:\n" + summary)
    print("torch imported: " + ("yes" if "torch" in sys.modules else "no"))


if __name__ == "__main__":
    main()
