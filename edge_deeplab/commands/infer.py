"""``edge-deeplab infer BUNDLE SOURCE --out PATH``: segment images, folders, videos, cameras, streams.

Images and folders give overlay PNGs (and, with ``--masks``, paletted index PNGs) in the --out
folder; video sources give an annotated video (overlay + fps) through the threaded pipeline of
:mod:`runtime.video`. Torch-free: this is what runs on the device.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

from runtime.errors import EdgeDeeplabError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """Backend knobs shared by ``infer`` and ``benchmark`` (see runtime.options.RuntimeOptions)."""
    group = parser.add_argument_group("runtime options")
    group.add_argument("--threads", type=int, default=0, help="intra-op threads (0: the backend decides)")
    group.add_argument("--ort-optimization", choices=["disable", "basic", "extended", "all"], default="all",
                       help="ONNX Runtime graph optimization level")
    group.add_argument("--ov-precision", choices=["f32", "f16", "bf16"], default=None,
                       help="OpenVINO INFERENCE_PRECISION_HINT (default: f32 for fp32 bundles, OpenVINO's own otherwise)")
    group.add_argument("--ov-hint", choices=["LATENCY", "THROUGHPUT"], default="LATENCY",
                       help="OpenVINO PERFORMANCE_HINT")
    group.add_argument("--device", default="CPU", help="OpenVINO device (CPU, GPU, NPU, AUTO)")
    group.add_argument("--engine-cache", type=Path, default=None,
                       help="folder for TensorRT engines built on this device (default: BUNDLE/engines)")


def runtime_options(args: argparse.Namespace) -> dict:
    """The ``runtime.load`` keywords for the parsed runtime options."""
    return {
        "threads": args.threads,
        "ort_optimization": args.ort_optimization,
        "ov_precision_hint": args.ov_precision,
        "ov_performance_hint": args.ov_hint,
        "device": args.device,
        "engine_cache_dir": args.engine_cache,
    }


def add_parser(subparsers: argparse._SubParsersAction, name: str) -> None:
    parser = subparsers.add_parser(
        name,
        help="segment images, a folder, a video, a camera or a stream with a bundle",
        description=(
            "Run a bundle on SOURCE: an image, a folder of images, a video file, a camera index (0), an "
            "RTSP/HTTP URL or a GStreamer pipeline (text containing '!'). Images -> overlay PNGs in --out; "
            "video sources -> an annotated video (--out FILE.mp4, or a folder)."
        ),
    )
    parser.add_argument("bundle", type=Path, help="bundle folder (made by 'edge-deeplab export')")
    parser.add_argument("source", nargs="?", help="image, folder, video, camera index, URL or GStreamer pipeline")
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder (images), an image file (one image in), or a video file / folder")
    parser.add_argument("--masks", action="store_true", help="also write class-index PNGs (with palette)")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the colour mask")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    parser.add_argument("--upsample", choices=["mask", "logits"], default="mask",
                        help="resize the argmax mask (fast) or the logits (bilinear, smoother) to the image size")
    parser.add_argument("--max-frames", type=int, default=None, help="stop a video/camera/stream after N frames")
    parser.add_argument("--duration", type=float, default=None, help="stop a video/camera/stream after S seconds")
    parser.add_argument("--queue-size", type=int, default=4, help="frames buffered between pipeline stages")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    csi = parser.add_argument_group("Jetson CSI camera (nvarguscamerasrc; needs OpenCV with GStreamer)")
    csi.add_argument("--csi-camera", action="store_true", help="read a CSI camera instead of SOURCE")
    csi.add_argument("--csi-sensor-id", type=int, default=0)
    csi.add_argument("--csi-width", type=int, default=1280)
    csi.add_argument("--csi-height", type=int, default=720)
    csi.add_argument("--csi-fps", type=int, default=30)
    add_runtime_options(parser)
    parser.set_defaults(func=run)


def _progress(total: int | None, disabled: bool, unit: str):
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, disable=disabled, file=sys.stderr, dynamic_ncols=True)


def _image_out_file(args: argparse.Namespace, kind: str) -> Path | None:
    """--out as the overlay file itself: one image in, an image file name (``result.png``) out."""
    from runtime.images import IMAGE_SUFFIXES

    return args.out if kind == "image" and args.out.suffix.lower() in IMAGE_SUFFIXES else None


def _single_mask_path(single: Path) -> Path:
    """Where --masks puts the class-index PNG beside an image-file --out: ``result.png`` -> ``result_mask.png``."""
    return single.with_name(f"{single.stem}_mask.png")


def _segment_images(seg, images: list[Path], out: Path, args: argparse.Namespace, single: Path | None) -> list[str]:
    """Write each image's overlay (and mask) into ``out``, or to ``single``; return the skipped ones."""
    import runtime
    from runtime.images import write_image, write_mask

    skipped: list[str] = []
    with _progress(len(images), args.no_progress or len(images) < 2, "img") as bar:
        for path in images:
            try:
                image = runtime.read_image(path)
            except EdgeDeeplabError as exc:
                skipped.append(str(exc))
                bar.update(1)
                continue
            mask = seg.predict(image)
            overlay_path = single or out / f"{path.stem}_overlay.png"
            write_image(overlay_path, runtime.overlay(image, mask, seg.palette, args.alpha))
            if args.masks:
                write_mask(_single_mask_path(single) if single else out / f"{path.stem}_mask.png", mask, seg.palette)
            bar.update(1)
    return skipped


def _run_images(seg, images: list[Path], args: argparse.Namespace, single: Path | None) -> int:
    """Overlay (and mask) PNGs for each image; unreadable images are skipped, counted and listed.

    A folder of results is written under a temporary name and renamed into place when done, so
    a run in which every image fails (or the disk fills up) leaves no folder, and an existing
    --out is replaced (with --force) only by a complete one.
    """
    from runtime.files import atomic_dir

    out: Path = args.out
    if single is not None:
        skipped = _segment_images(seg, images, out, args, single)
    else:
        with atomic_dir(out, overwrite=args.force) as tmp:
            skipped = _segment_images(seg, images, tmp, args, None)
            if len(skipped) == len(images):
                raise EdgeDeeplabError(skipped[0] if len(images) == 1 else
                                       f"none of the {len(images)} images could be read; the first: {skipped[0]}")
    done = len(images) - len(skipped)
    if done == 0:
        raise EdgeDeeplabError(skipped[0])
    where = f"into {out}" if single is None else f"to {out}"
    print(f"{done} image(s) segmented {where}" + (f"; {len(skipped)} unreadable skipped:" if skipped else ""))
    for line in skipped:
        print(f"  skipped {line}")
    return 0


def _video_out_path(args: argparse.Namespace, source: str, kind: str) -> Path:
    """--out as given if it names a video file, else ``--out/<source name>.mp4``."""
    if args.out.suffix.lower() in VIDEO_SUFFIXES:
        return args.out
    if args.out.exists() and not args.out.is_dir():
        raise EdgeDeeplabError(f"--out {args.out} is a file; give a folder or a video file name ({', '.join(VIDEO_SUFFIXES)})")
    stem = Path(source).stem if kind == "video" else {"camera": f"camera{source}"}.get(kind, kind)
    return args.out / f"{stem}.mp4"


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM stops like Ctrl-C: what was read is finished and the video kept.

    ``docker stop``, systemd and a plain ``kill`` send SIGTERM; dying on it would leave only the
    hidden partial file. The first SIGTERM raises KeyboardInterrupt("SIGTERM") in the main thread
    (where Python runs signal handlers); later ones are ignored while the run winds down.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt("SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _ended_early(stats, declared: int | None, args: argparse.Namespace) -> str:
    """A line when a video file gave fewer frames than its header declares (a truncated file), else ''."""
    stopped = stats.interrupted or args.max_frames is not None or args.duration is not None
    seen = stats.frames + stats.skipped
    if declared is None or stopped or seen >= declared:
        return ""
    return f"the stream ended early: {seen} of the {declared} frames the file declares (truncated or damaged file?)"


def _run_video(seg, source: str, kind: str, args: argparse.Namespace) -> int:
    from runtime.files import check_writable
    from runtime.sources import capture_fps, capture_frames, open_capture
    from runtime.video import run_video

    out_path = check_writable(_video_out_path(args, source, kind), args.force)
    masks_dir = out_path.with_name(f"{out_path.stem}_masks") if args.masks else None
    if masks_dir is not None:
        check_writable(masks_dir, args.force)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    cap = open_capture(source, kind)
    try:
        total = declared = None
        if kind == "video":
            import cv2

            total = declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
            if args.max_frames is not None and total is not None:
                total = min(total, args.max_frames)
        with _progress(total, args.no_progress, "frame") as bar, _sigterm_as_interrupt():
            stats = run_video(
                capture_frames(cap),
                seg.predict,
                seg.palette,
                out_path,
                fps=capture_fps(cap),
                masks_dir=masks_dir,
                alpha=args.alpha,
                max_frames=args.max_frames,
                duration=args.duration,
                queue_size=args.queue_size,
                progress=bar.update,
            )
    finally:
        cap.release()
    print(stats.summary())
    early = _ended_early(stats, declared, args)
    if early:
        print(early)
    return 130 if stats.interrupted else 0


def run(args: argparse.Namespace) -> int:
    import runtime
    from runtime.images import IMAGE_SUFFIXES, list_images
    from runtime.sources import VIDEO_KINDS, classify_source, csi_camera_pipeline

    if args.csi_camera:
        if args.source:
            raise EdgeDeeplabError("give either SOURCE or --csi-camera, not both")
        source = csi_camera_pipeline(args.csi_sensor_id, args.csi_width, args.csi_height, args.csi_fps)
    elif args.source:
        source = args.source
    else:
        raise EdgeDeeplabError("no SOURCE given (an image, folder, video, camera index, URL or pipeline; or --csi-camera)")
    if args.queue_size < 1:
        raise EdgeDeeplabError("--queue-size must be at least 1")
    if not 0.0 <= args.alpha <= 1.0:
        raise EdgeDeeplabError("--alpha must be within [0, 1]")
    kind = classify_source(source)
    if kind not in VIDEO_KINDS:
        from runtime.files import check_writable

        single = _image_out_file(args, kind)
        check_writable(args.out, args.force)
        if single is not None and args.masks:
            check_writable(_single_mask_path(single), args.force)
        images = [Path(source)] if kind == "image" else list_images(source)
        if not images:
            raise EdgeDeeplabError(f"{source} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    with runtime.load(args.bundle, upsample=args.upsample, **runtime_options(args)) as seg:
        if kind in VIDEO_KINDS:
            return _run_video(seg, source, kind, args)
        return _run_images(seg, images, args, single)
