"""What ``SOURCE`` means on the command line, and opening video sources with OpenCV.

A source is an image, a folder of images, a glob, a video file, a camera index ("0"), a network
stream (rtsp://, http://, ...) or a GStreamer pipeline (any text with a '!', e.g. a Jetson CSI
camera).
OpenCV is imported only for the video kinds, so image-only use needs no ``video`` extra.
"""

from __future__ import annotations

import glob
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from runtime.errors import EdgeDeeplabError
from runtime.images import IMAGE_SUFFIXES, list_images

STREAM_SCHEMES = re.compile(r"^(rtsp|rtsps|rtmp|http|https|udp|tcp|srt)://", re.IGNORECASE)
VIDEO_KINDS = ("video", "camera", "stream", "gstreamer")
# Consecutive failed reads after which a source is taken to have ended.
MAX_CONSECUTIVE_FAILURES = 25


def classify_source(source: str) -> str:
    """One of ``image``, ``folder``, ``video``, ``camera``, ``stream``, ``gstreamer``."""
    if "!" in source:
        return "gstreamer"
    if source.isdigit():
        return "camera"
    if STREAM_SCHEMES.match(source):
        return "stream"
    path = Path(source)
    if path.is_dir():
        return "folder"
    if path.is_file():
        return "image" if path.suffix.lower() in IMAGE_SUFFIXES else "video"
    raise EdgeDeeplabError(f"source {source} not found (expected an image, folder, video, camera index, URL or pipeline)")


def expand_glob(source: str) -> list[str]:
    """A glob pattern (``frames/*.jpg``, quoted so the shell left it) -> the files it matches, sorted;
    anything else (a path that exists, a URL, a pipeline) as given."""
    if glob.has_magic(source) and not Path(source).exists() and "!" not in source and "://" not in source:
        matches = sorted(glob.glob(source))
        if not matches:
            raise EdgeDeeplabError(f"no file matches {source}")
        return matches
    return [source]


def sort_sources(sources: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Command-line sources -> the image files (folders listed, globs expanded) and the video sources
    with their kind, each once, in the order given. A camera, stream or pipeline must come alone:
    one process reads one live source."""
    images: list[Path] = []
    videos: list[tuple[str, str]] = []
    expanded = list(dict.fromkeys(item for source in sources for item in expand_glob(source)))
    for source in expanded:
        kind = classify_source(source)
        if kind in VIDEO_KINDS:
            if kind != "video" and len(expanded) > 1:
                raise EdgeDeeplabError(f"a {kind} source runs alone; give {source} without other sources")
            videos.append((source, kind))
        elif kind == "folder":
            found = list_images(source)
            if not found and len(expanded) == 1:
                raise EdgeDeeplabError(f"{source} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            images.extend(found)
        else:
            images.append(Path(source))
    if not images and not videos:
        raise EdgeDeeplabError(f"the sources hold no image files ({', '.join(IMAGE_SUFFIXES)}) and no video")
    return list(dict.fromkeys(images)), videos


def csi_camera_pipeline(sensor_id: int = 0, width: int = 1280, height: int = 720, framerate: int = 30) -> str:
    """GStreamer pipeline for a Jetson CSI camera (e.g. IMX219/IMX477) via nvarguscamerasrc.

    The camera delivers NV12 in NVMM (GPU) memory; nvvidconv copies it to system memory as BGRx,
    videoconvert drops the x, and ``appsink drop=1`` discards stale frames so the model always
    sees the latest one instead of a growing backlog.
    """
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! "
        f"video/x-raw(memory:NVMM),width={width},height={height},framerate={framerate}/1 ! "
        "nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink drop=1"
    )


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise EdgeDeeplabError("video sources need OpenCV: pip install 'edge-deeplab[video]'") from None
    return cv2


def open_capture(source: str, kind: str) -> Any:
    """An opened ``cv2.VideoCapture`` for a video kind of source, or one clear error."""
    cv2 = _cv2()
    if kind == "camera":
        cap = cv2.VideoCapture(int(source))
    elif kind == "gstreamer":
        cap = cv2.VideoCapture(source, cv2.CAP_GSTREAMER)
    else:
        cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        cap.release()
        hint = {
            "gstreamer": " (is OpenCV built with GStreamer? pip wheels are not; use the system OpenCV on a Jetson)",
            "camera": " (is the camera connected and not in use?)",
            "video": " (not a video file OpenCV can decode, or a corrupt one)",
        }.get(kind, "")
        raise EdgeDeeplabError(f"cannot open {kind} {source}{hint}")
    return cap


def capture_fps(cap: Any, default: float = 30.0) -> float:
    """The source's frame rate, or ``default`` when it reports none (cameras and streams often don't)."""
    fps = float(cap.get(_cv2().CAP_PROP_FPS) or 0.0)
    return fps if 1.0 <= fps <= 240.0 else default


def capture_frames(cap: Any, max_failures: int = MAX_CONSECUTIVE_FAILURES) -> Iterator[np.ndarray | None]:
    """BGR frames from a capture; ``None`` marks a frame that could not be decoded (skipped).

    A failed read only counts as a corrupt frame once a later read succeeds; failures at the end
    are the end of the stream, not corruption. ``max_failures`` consecutive failures end it.
    """
    failures = 0
    while failures < max_failures:
        ok, frame = cap.read()
        if not ok or frame is None or frame.size == 0:
            failures += 1
            continue
        for _ in range(failures):
            yield None
        failures = 0
        yield frame
