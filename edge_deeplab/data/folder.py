"""Datasets stored as image and mask files: the shared reader, and the plain-folder layout.

:class:`PairedFilesDataset` is what every on-disk layout becomes once its files are listed: a list
of (name, image file, mask file) and the class names. Reading a sample decodes both files, checks
that they have the same size and that every mask label is a class or ignore, and raises
:class:`~edge_deeplab.data.check.SampleProblem` naming the file otherwise. VOC and Cityscapes only
differ in how they list their files (and Cityscapes in a label table), so they build one of these.

The plain-folder layout, for your own data::

    mydata/
      images/      photo_001.jpg, photo_002.png, ...   (any format Pillow reads)
      masks/       photo_001.png, photo_002.png, ...   (same stem; PNG, BMP or TIFF of class indices)
      classes.yaml classes: [background, person, car]
                   palette: [[0, 0, 0], [220, 20, 60], [0, 0, 142]]   # optional
                   ignore_index: 255                                  # optional
                   name: mydata                                       # optional
      splits/      train.txt, val.txt                                 # optional

Images and masks are matched by file stem. Masks hold class indices (palette or grayscale PNG);
colour masks are accepted only when ``classes.yaml`` gives a ``palette`` to decode them with.
``ignore_index`` is the mask value meaning "not labelled"; it is read as 255, the project's ignore.

Splits, the first rule that applies:

1. ``splits/<split>.txt`` lists the stems of a split, one a line (``#`` comments allowed);
2. ``images/<split>/`` and ``masks/<split>/`` subfolders hold a split each;
3. otherwise a fixed 90/10 train/val split by a hash of the file stem: the same file is always in
   the same split, whatever else is added or removed.

The split ``all`` is every sample. Unmatched files (an image without a mask, a mask without an
image, a listed stem without files) are left out of the samples and recorded in ``problems``;
``edge-deeplab datasets check`` prints them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edge_deeplab.data.check import (
    MISSING,
    SIZE_MISMATCH,
    UNMATCHED,
    UNREADABLE,
    Problem,
    SampleProblem,
    check_labels,
)
from edge_deeplab.data.dataset import IGNORE_INDEX, SegmentationDataset, Sample
from edge_deeplab.data.masks import read_mask
from edge_deeplab.data.palette import voc_colormap
from runtime.errors import EdgeDeeplabError
from runtime.images import IMAGE_SUFFIXES, read_image

# Masks must survive saving without changing a label: lossless formats only.
MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".pgm")
CLASSES_FILE = "classes.yaml"
# Every this-many-th stem (by hash) is in val when no split is given: a 90/10 split.
HASH_VAL_EVERY = 10


class PairedFilesDataset(SegmentationDataset):
    """A list of (sample name, image file, mask file) with class names, read on demand.

    Attributes:
        pairs: the samples' (name, image path, mask path), in order.
        layout: one line saying what was found where, for ``datasets check`` and errors.
        problems: files left out while listing, with the reason.
        label_map: optional 256-entry uint8 table from stored mask values to class indices
            (Cityscapes' labelIds -> trainIds); when given it is total, so no label is unknown.
        file_ignore: the stored mask value meaning ignore, mapped to 255 on reading.
        mask_palette: colours to decode RGB masks with, or None to refuse colour masks.
    """

    def __init__(
        self,
        *,
        name: str,
        classes: Sequence[str],
        palette: Sequence[Sequence[int]],
        pairs: list[tuple[str, Path, Path]],
        layout: str,
        problems: list[Problem] | None = None,
        label_map: np.ndarray | None = None,
        file_ignore: int = IGNORE_INDEX,
        mask_palette: Sequence[Sequence[int]] | None = None,
    ) -> None:
        self.name = name
        self.classes = list(classes)
        self.palette = [tuple(int(v) for v in colour) for colour in palette]
        self.pairs = pairs
        self.layout = layout
        self.problems = list(problems or [])
        self.label_map = label_map
        self.file_ignore = int(file_ignore)
        self.mask_palette = mask_palette
        if not pairs:
            first = f"; first problem: {self.problems[0].message}" if self.problems else ""
            raise EdgeDeeplabError(f"{layout}: no image with a matching mask found{first}")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> Sample:
        name, image_path, mask_path = self.pairs[self._check_index(index)]
        image = _read(read_image, image_path)
        mask = _read(read_mask, mask_path, self.mask_palette)
        if image.shape[:2] != mask.shape:
            raise SampleProblem(
                SIZE_MISMATCH,
                f"image {image_path} is {image.shape[1]}x{image.shape[0]} but its mask {mask_path} "
                f"is {mask.shape[1]}x{mask.shape[0]}",
            )
        if self.label_map is not None:
            mask = self.label_map[mask]
        else:
            check_labels(mask, self.num_classes, mask_path, self.file_ignore)
            if self.file_ignore != IGNORE_INDEX:
                mask[mask == self.file_ignore] = IGNORE_INDEX
        return Sample(image=image, mask=mask, name=name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.layout!r}, {len(self)} samples)"


def _read(reader: Any, path: Path, *args: Any) -> np.ndarray:
    """Call an image or mask reader, turning its error into an 'unreadable file' problem."""
    try:
        return reader(path, *args)
    except EdgeDeeplabError as exc:
        raise SampleProblem(UNREADABLE, str(exc)) from None


def read_list_file(path: Path) -> list[str]:
    """Stems from a split list: one a line, blank lines and ``#`` comments skipped.

    A line may also be a path with a suffix (``JPEGImages/2007_000032.jpg``, as some published
    VOC lists write them, sometimes followed by the mask path): its first field's stem is used.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgeDeeplabError(f"cannot read split list {path}: {exc}") from None
    stems = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            first = line.split()[0]
            stems.append(Path(first).stem if Path(first).suffix.lower() in IMAGE_SUFFIXES else Path(first).name)
    return stems


def pair_by_stem(
    stems: Sequence[str],
    images: dict[str, Path],
    masks: dict[str, Path],
    image_dir: Path,
    mask_dir: Path,
) -> tuple[list[tuple[str, Path, Path]], list[Problem]]:
    """Pair up files for ``stems``; a stem missing either file becomes a problem instead."""
    pairs: list[tuple[str, Path, Path]] = []
    problems: list[Problem] = []
    for stem in stems:
        image, mask = images.get(stem), masks.get(stem)
        if image is not None and mask is not None:
            pairs.append((stem, image, mask))
        elif image is not None:
            problems.append(Problem(UNMATCHED, f"image {image} has no mask in {mask_dir}"))
        elif mask is not None:
            problems.append(Problem(UNMATCHED, f"mask {mask} has no image in {image_dir}"))
        else:
            problems.append(Problem(MISSING, f"{stem} is listed but is neither in {image_dir} nor in {mask_dir}"))
    return pairs, problems


def _files_by_stem(directory: Path, suffixes: Sequence[str], what: str) -> tuple[dict[str, Path], list[Problem]]:
    """Files of ``directory`` (not recursive) by stem; duplicates and other files become problems."""
    found: dict[str, Path] = {}
    problems: list[Problem] = []
    if not directory.is_dir():
        return found, problems
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        suffix = path.suffix.lower()
        if suffix not in suffixes:
            if what == "mask" and suffix in IMAGE_SUFFIXES:
                problems.append(Problem(
                    UNREADABLE,
                    f"mask {path} is {suffix}, a lossy format that changes labels; save masks as PNG",
                ))
            continue
        if path.stem in found:
            problems.append(Problem(UNMATCHED, f"two {what}s named {path.stem}: {found[path.stem].name} and {path.name}; using the first"))
            continue
        found[path.stem] = path
    return found, problems


def in_val(stem: str) -> bool:
    """The fixed 90/10 split: a stem's hash decides, so a file never changes split."""
    digest = hashlib.sha1(stem.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % HASH_VAL_EVERY == 0


def _as_colour(value: Any) -> tuple[int, int, int] | None:
    if (
        isinstance(value, (list, tuple))
        and len(value) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)
    ):
        return (value[0], value[1], value[2])
    return None


def read_classes_file(path: Path) -> dict[str, Any]:
    """Parse and validate ``classes.yaml``: class names, and optional palette, ignore index and name."""
    import yaml

    if not path.is_file():
        raise EdgeDeeplabError(
            f"{path.parent} has images/ and masks/ but no {CLASSES_FILE}; add one naming the classes "
            "in label order, e.g. 'classes: [background, person, car]'"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = str(exc).replace("\n", " ")
        raise EdgeDeeplabError(f"cannot read {path}: {reason}") from None
    if not isinstance(data, dict) or "classes" not in data:
        raise EdgeDeeplabError(f"{path} must be a mapping with a 'classes' list, e.g. 'classes: [background, person]'")
    unknown = sorted(set(map(str, data)) - {"classes", "palette", "ignore_index", "name"})
    if unknown:
        raise EdgeDeeplabError(f"{path}: unknown key(s) {', '.join(unknown)}; known: classes, palette, ignore_index, name")
    classes = data["classes"]
    if (
        not isinstance(classes, list)
        or not classes
        or not all(isinstance(c, (str, int)) and not isinstance(c, bool) and str(c).strip() for c in classes)
    ):
        raise EdgeDeeplabError(f"{path}: 'classes' must be a non-empty list of class names")
    classes = [str(c).strip() for c in classes]
    if len(set(classes)) != len(classes):
        dup = next(c for c in classes if classes.count(c) > 1)
        raise EdgeDeeplabError(f"{path}: class name {dup!r} appears twice")
    if len(classes) > 255:
        raise EdgeDeeplabError(f"{path}: {len(classes)} classes; uint8 masks hold at most 255 (255 is ignore)")
    ignore = data.get("ignore_index", IGNORE_INDEX)
    if not isinstance(ignore, int) or isinstance(ignore, bool) or not len(classes) <= ignore <= 255:
        raise EdgeDeeplabError(
            f"{path}: ignore_index must be an integer from {len(classes)} to 255 (not a class index), got {ignore!r}"
        )
    palette_given = data.get("palette")
    if palette_given is None:
        palette = voc_colormap(len(classes))
    else:
        colours = [_as_colour(c) for c in palette_given] if isinstance(palette_given, list) else [None]
        if None in colours or len(colours) != len(classes):
            raise EdgeDeeplabError(
                f"{path}: 'palette' must list one [r, g, b] (0-255) per class, {len(classes)} in all"
            )
        palette = colours
    name = data.get("name", path.parent.name)
    return {
        "classes": classes,
        "palette": palette,
        "palette_given": palette_given is not None,
        "ignore_index": ignore,
        "name": str(name),
    }


def detect(spec: str) -> bool:
    """A directory with ``images/`` and ``masks/`` subdirectories."""
    root = Path(spec)
    return (root / "images").is_dir() and (root / "masks").is_dir()


def _split_subfolders(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "images").iterdir() if p.is_dir() and (root / "masks" / p.name).is_dir())


def from_path(spec: str, split: str) -> PairedFilesDataset:
    """Open split ``split`` of a plain-folder dataset (see the module docstring for the rules)."""
    root = Path(spec)
    meta = read_classes_file(root / CLASSES_FILE)
    subfolders = _split_subfolders(root)
    splits_dir = root / "splits"
    problems: list[Problem] = []
    if splits_dir.is_dir():
        images, image_problems = _files_by_stem(root / "images", IMAGE_SUFFIXES, "image")
        masks, mask_problems = _files_by_stem(root / "masks", MASK_SUFFIXES, "mask")
        problems += image_problems + mask_problems
        if split == "all":
            stems = sorted(set(images) | set(masks))
        else:
            list_file = splits_dir / f"{split}.txt"
            if not list_file.is_file():
                have = sorted(p.stem for p in splits_dir.glob("*.txt"))
                raise EdgeDeeplabError(
                    f"{root} has no splits/{split}.txt; splits found: {', '.join(have) or 'none'} (or use 'all')"
                )
            stems = read_list_file(list_file)
        rule = "splits/*.txt"
        pairs, pair_problems = pair_by_stem(stems, images, masks, root / "images", root / "masks")
    elif subfolders:
        wanted = subfolders if split == "all" else [split]
        if split != "all" and split not in subfolders:
            raise EdgeDeeplabError(
                f"{root} has split subfolders {', '.join(subfolders)} in images/ and masks/, not {split!r}"
            )
        pairs, pair_problems = [], []
        for name in wanted:
            images, image_problems = _files_by_stem(root / "images" / name, IMAGE_SUFFIXES, "image")
            masks, mask_problems = _files_by_stem(root / "masks" / name, MASK_SUFFIXES, "mask")
            problems += image_problems + mask_problems
            more_pairs, more_problems = pair_by_stem(
                sorted(set(images) | set(masks)), images, masks, root / "images" / name, root / "masks" / name
            )
            pairs += more_pairs
            pair_problems += more_problems
        rule = "images/<split>/ subfolders"
    else:
        if split not in ("train", "val", "all"):
            raise EdgeDeeplabError(
                f"{root} has no splits/ list or split subfolders, so its splits are train and val "
                f"(90/10 by file-name hash) and all; not {split!r}"
            )
        images, image_problems = _files_by_stem(root / "images", IMAGE_SUFFIXES, "image")
        masks, mask_problems = _files_by_stem(root / "masks", MASK_SUFFIXES, "mask")
        problems += image_problems + mask_problems
        stems = sorted(
            stem for stem in set(images) | set(masks) if split == "all" or in_val(stem) == (split == "val")
        )
        if not stems and (images or masks):
            raise EdgeDeeplabError(
                f"the 90/10 file-name hash split of {root} puts no file in {split!r} ({len(images)} images "
                "in all); add splits/train.txt and splits/val.txt to choose the split yourself"
            )
        rule = "a 90/10 train/val split by file-name hash"
        pairs, pair_problems = pair_by_stem(stems, images, masks, root / "images", root / "masks")
    return PairedFilesDataset(
        name=meta["name"],
        classes=meta["classes"],
        palette=meta["palette"],
        pairs=pairs,
        layout=f"folder dataset at {root} (images/, masks/, {CLASSES_FILE}; {rule})",
        problems=problems + pair_problems,
        file_ignore=meta["ignore_index"],
        mask_palette=meta["palette"] if meta["palette_given"] else None,
    )
