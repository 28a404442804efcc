"""``edge-deeplab infer BUNDLE SOURCE...``: segment images, folders, videos, cameras, streams.

Images and folders give overlay PNGs (and, with ``--masks``, paletted index PNGs); each video gives
an annotated video (overlay + fps) through the threaded pipeline of :mod:`runtime.video`. Several
sources and globs can be given at once; a camera or stream runs alone. Without ``--out`` the
results go to a new numbered folder under ``runs/infer/``, so no run overwrites another.
Torch-free: this is what runs on the device.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from edge_deeplab.commands.options import (RUNTIME_DEFAULTS, EngineCache, OrtOptimization, OrtOptimizationOpt,
                                           OvDevice, OvHint, OvHintOpt, OvPrecisionOpt, Threads, Upsample,
                                           runtime_options)
from edge_deeplab.ranges import positive
from runtime.errors import EdgeDeeplabError
from runtime.progress import progress_bar

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")
RUNS_FOLDER = Path("runs/infer")
CSI_PANEL = "Jetson CSI camera (nvarguscamerasrc; needs OpenCV with GStreamer)"
app = typer.Typer()


@dataclass(frozen=True)
class VideoSettings:
    """How a video, camera or stream source is run and written."""

    masks: bool
    alpha: float
    force: bool
    max_frames: int | None
    duration: float | None
    queue_size: int
    progress: bool


@app.command(help="Run a bundle on each SOURCE: an image, a folder of images, a glob ('frames/*.jpg', quoted), a video "
                  "file, a camera index (0), an RTSP/HTTP URL or a GStreamer pipeline (text containing '!'). Images "
                  "give overlay PNGs, each video an annotated video. A camera or stream runs alone.")
def infer(
    bundle: Annotated[Path, typer.Argument(help="bundle folder (made by 'edge-deeplab export')", show_default=False)],
    sources: Annotated[Optional[List[str]], typer.Argument(
        metavar="SOURCE...", help="images, folders, globs, videos; or one camera index, URL or pipeline",
        show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option(
        help="output folder; an image file for one image in; a video file for one video in",
        show_default=f"a new numbered folder {RUNS_FOLDER}/NNN")] = None,
    masks: Annotated[bool, typer.Option("--masks", help="also write class-index PNGs (with palette)")] = False,
    alpha: Annotated[float, typer.Option(min=0.0, max=1.0, help="overlay opacity of the colour mask")] = 0.5,
    force: Annotated[bool, typer.Option("--force", help="replace an existing --out")] = False,
    upsample: Annotated[Upsample, typer.Option(
        help="resize the argmax mask (fast) or the logits (bilinear, smoother) to the image size")
                        ] = Upsample(RUNTIME_DEFAULTS.upsample),
    max_frames: Annotated[Optional[int], typer.Option(min=1, help="stop a video/camera/stream after N frames",
                                                      show_default="the end of the stream")] = None,
    duration: Annotated[Optional[float], typer.Option(click_type=positive(),
                                                      help="stop a video/camera/stream after S seconds",
                                                      show_default="the end of the stream")] = None,
    queue_size: Annotated[int, typer.Option(min=1, help="frames buffered between pipeline stages")] = 4,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="no progress bar")] = False,
    csi_camera: Annotated[bool, typer.Option("--csi-camera", help="read a CSI camera instead of SOURCE",
                                             rich_help_panel=CSI_PANEL)] = False,
    csi_sensor_id: Annotated[int, typer.Option(min=0, rich_help_panel=CSI_PANEL)] = 0,
    csi_width: Annotated[int, typer.Option(min=1, rich_help_panel=CSI_PANEL)] = 1280,
    csi_height: Annotated[int, typer.Option(min=1, rich_help_panel=CSI_PANEL)] = 720,
    csi_fps: Annotated[int, typer.Option(min=1, rich_help_panel=CSI_PANEL)] = 30,
    threads: Threads = RUNTIME_DEFAULTS.threads,
    ort_optimization: OrtOptimizationOpt = OrtOptimization(RUNTIME_DEFAULTS.ort_optimization),
    ov_precision: OvPrecisionOpt = RUNTIME_DEFAULTS.ov_precision_hint,
    ov_hint: OvHintOpt = OvHint(RUNTIME_DEFAULTS.ov_performance_hint),
    device: OvDevice = RUNTIME_DEFAULTS.device,
    engine_cache: EngineCache = None,
) -> int:
    import runtime
    from runtime.files import missing_folders, new_numbered_dir, remove_empty
    from runtime.outputs import output_lock
    from runtime.sources import csi_camera_pipeline, sort_sources

    if csi_camera:
        if sources:
            raise EdgeDeeplabError("give either SOURCE or --csi-camera, not both")
        sources = [csi_camera_pipeline(csi_sensor_id, csi_width, csi_height, csi_fps)]
    if not sources:
        raise EdgeDeeplabError("no SOURCE given (an image, folder, glob, video, camera index, URL or pipeline; "
                               "or --csi-camera)")
    images, videos = sort_sources(sources)
    inputs = [bundle, *images, *(source for source, kind in videos if kind == "video")]
    claimed, made = None, []
    if out is None:
        made = missing_folders(RUNS_FOLDER)
        out = claimed = new_numbered_dir(RUNS_FOLDER)
        made.insert(0, claimed)
        force = True  # the folder is new and ours
    settings = VideoSettings(masks, alpha, force, max_frames, duration, queue_size, not no_progress)
    try:
        # A numbered folder is claimed by creating it; an --out given is held against a second run.
        with output_lock(out) if claimed is None else contextlib.nullcontext():
            plan = _plan_outputs(images, videos, out, settings, inputs)
            options = runtime_options(threads, ort_optimization, ov_precision, ov_hint, device, engine_cache)
            with runtime.load(bundle, upsample=upsample.value, **options) as seg:
                code = _run_images(seg, images, out, plan, settings) if images else 0
                for (source, kind), path in zip(videos, plan.videos):
                    code = _run_video(seg, source, kind, path, settings)
                    if code:  # stopped: the next video is not started
                        break
    except BaseException:
        remove_empty(made)  # a run that wrote nothing leaves no empty numbered folder behind
        raise
    if claimed is not None:
        print(f"results in {claimed}")
    return code


@dataclass(frozen=True)
class OutputPlan:
    """Where every result goes, decided (and checked) before the bundle is loaded."""

    single_image: Path | None  # --out is the overlay file itself (one image in)
    names: dict[Path, str]  # image -> the stem its results are written under
    videos: list[Path]  # one annotated video per video source


def _plan_outputs(images: list[Path], videos: list[tuple[str, str]], out: Path, settings: VideoSettings,
                  inputs: list) -> OutputPlan:
    """Decide every output path and refuse, before any work, what would overwrite an input or an
    earlier output (without --force) or collide."""
    from runtime.files import check_writable
    from runtime.images import IMAGE_SUFFIXES
    from runtime.outputs import refuse_overlap

    def check(path: Path) -> None:
        refuse_overlap(path, inputs)
        check_writable(path, settings.force)

    single = out if len(images) == 1 and not videos and out.suffix.lower() in IMAGE_SUFFIXES else None
    if images:
        check(out)
        if single is not None and settings.masks:
            check(_single_mask_path(single))
    video_paths = [_video_out_path(out, source, kind, len(videos)) for source, kind in videos]
    for path in video_paths:
        check(path)
        if settings.masks:
            check(_masks_dir(path))
    repeated = sorted(str(path) for path, n in Counter(video_paths).items() if n > 1)
    if repeated:
        raise EdgeDeeplabError(f"two videos would both be written to {repeated[0]}; run them separately")
    return OutputPlan(single, _unique_stems(images), video_paths)


def _unique_stems(images: list[Path]) -> dict[Path, str]:
    """Each image's output stem: its own, or ``folder_stem`` when two sources share a stem."""
    counts = Counter(path.stem for path in images)
    names: dict[Path, str] = {}
    taken: set[str] = set()  # a set, not names.values(): a folder of 10,000 frames stays linear
    for path in images:
        name = path.stem if counts[path.stem] == 1 else f"{path.parent.name}_{path.stem}"
        while name in taken:
            name += "_"
        taken.add(name)
        names[path] = name
    return names


def _single_mask_path(single: Path) -> Path:
    """Where --masks puts the class-index PNG beside an image-file --out: ``result.png`` -> ``result_mask.png``."""
    return single.with_name(f"{single.stem}_mask.png")


def _masks_dir(video: Path) -> Path:
    return video.with_name(f"{video.stem}_masks")


def _segment_images(seg, images: list[Path], out: Path, plan: OutputPlan, settings: VideoSettings) -> list[str]:
    """Write each image's overlay (and mask) into ``out``, or to the single file; return the skipped ones."""
    import runtime
    from runtime.images import write_image, write_mask

    skipped: list[str] = []
    with progress_bar(total=len(images), unit="img", enabled=settings.progress and len(images) > 1) as bar:
        for path in images:
            try:
                image = runtime.read_image(path)
            except EdgeDeeplabError as exc:
                skipped.append(str(exc))
                bar.update(1)
                continue
            mask = seg.predict(image)
            name = plan.names[path]
            write_image(plan.single_image or out / f"{name}_overlay.png",
                        runtime.overlay(image, mask, seg.palette, settings.alpha))
            if settings.masks:
                write_mask(_single_mask_path(plan.single_image) if plan.single_image else out / f"{name}_mask.png",
                           mask, seg.palette)
            bar.update(1)
    return skipped


def _run_images(seg, images: list[Path], out: Path, plan: OutputPlan, settings: VideoSettings) -> int:
    """Overlay (and mask) PNGs for each image; unreadable images are skipped, counted and listed.

    A folder of results is written under a temporary name and renamed into place when done, so
    a run in which every image fails (or the disk fills up) leaves no folder, and an existing
    --out is replaced (with --force) only by a complete one.
    """
    from runtime.files import atomic_dir

    if plan.single_image is not None:
        skipped = _segment_images(seg, images, out, plan, settings)
    else:
        with atomic_dir(out, overwrite=settings.force) as tmp:
            skipped = _segment_images(seg, images, tmp, plan, settings)
            if len(skipped) == len(images):
                raise EdgeDeeplabError(skipped[0] if len(images) == 1 else
                                       f"none of the {len(images)} images could be read; the first: {skipped[0]}")
    done = len(images) - len(skipped)
    if done == 0:
        raise EdgeDeeplabError(skipped[0])
    where = f"into {out}" if plan.single_image is None else f"to {out}"
    print(f"{done} image(s) segmented {where}" + (f"; {len(skipped)} unreadable skipped:" if skipped else ""))
    for line in skipped:
        print(f"  skipped {line}")
    return 0


def _video_out_path(out: Path, source: str, kind: str, videos: int) -> Path:
    """--out as given if it names a video file (one video in), else ``--out/<source name>.mp4``."""
    if out.suffix.lower() in VIDEO_SUFFIXES:
        if videos > 1:
            raise EdgeDeeplabError(f"--out {out} names one video file but {videos} videos are given; give a folder")
        return out
    if out.exists() and not out.is_dir():
        raise EdgeDeeplabError(f"--out {out} is a file; give a folder or a video file name ({', '.join(VIDEO_SUFFIXES)})")
    stem = Path(source).stem if kind == "video" else {"camera": f"camera{source}"}.get(kind, kind)
    return out / f"{stem}.mp4"


def _ended_early(stats, declared: int | None, stopped_on_request: bool) -> str:
    """A line when a video file gave fewer frames than its header declares (a truncated file), else ''."""
    stopped = stats.interrupted or stopped_on_request
    seen = stats.frames + stats.skipped
    if declared is None or stopped or seen >= declared:
        return ""
    return f"the stream ended early: {seen} of the {declared} frames the file declares (truncated or damaged file?)"


def _run_video(seg, source: str, kind: str, out_path: Path, settings: VideoSettings) -> int:
    from runtime.sources import capture_fps, capture_frames, open_capture
    from runtime.video import run_video

    masks_dir = _masks_dir(out_path) if settings.masks else None
    out_path.parent.mkdir(parents=True, exist_ok=True)
    cap = open_capture(source, kind)
    try:
        total = declared = None
        if kind == "video":
            import cv2

            total = declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
            if settings.max_frames is not None and total is not None:
                total = min(total, settings.max_frames)
        with progress_bar(total=total, unit="frame", enabled=settings.progress) as bar:
            stats = run_video(
                capture_frames(cap),
                seg.predict,
                seg.palette,
                out_path,
                fps=capture_fps(cap),
                masks_dir=masks_dir,
                alpha=settings.alpha,
                max_frames=settings.max_frames,
                duration=settings.duration,
                queue_size=settings.queue_size,
                progress=bar.update,
            )
    finally:
        cap.release()
    print(stats.summary())
    early = _ended_early(stats, declared, settings.max_frames is not None or settings.duration is not None)
    if early:
        print(early)
    if stats.interrupted:
        from runtime.signals import note_kept

        note_kept(f"{out_path} holds the {stats.frames} frames done")
        return 130
    return 0
