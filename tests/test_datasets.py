"""Dataset readers (VOC, Cityscapes, plain folder) and ``edge-deeplab datasets check``.

Every test builds a tiny dataset in its published layout under tmp_path (24x32 images), so the
readers are exercised on real files, encoded the way the real datasets encode them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_deeplab.cli import main
from edge_deeplab.data.base import open_dataset
from edge_deeplab.data.check import UNKNOWN_LABEL, SampleProblem, check_dataset
from edge_deeplab.data.cityscapes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from edge_deeplab.data.folder import in_val
from edge_deeplab.data.voc import VOC_CLASSES, VOC_PALETTE, voc_colormap
from runtime.errors import EdgeDeeplabError

H, W = 24, 32


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _save_rgb(path: Path, seed: int, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_image(seed)).save(path, format=fmt)


def _save_palette_png(path: Path, mask: np.ndarray, palette: list[tuple[int, int, int]]) -> None:
    """A mask as VOC stores it: a palette PNG whose pixel values are the class indices."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(mask, mode="P")
    table = np.zeros((256, 3), dtype=np.uint8)
    table[: len(palette)] = palette
    table[255] = (224, 224, 192)  # VOC's border colour
    img.putpalette(table.ravel().tolist())
    img.save(path)


def _save_gray_png(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask, mode="L").save(path)


def _voc_mask(seed: int) -> np.ndarray:
    mask = np.random.default_rng(seed).integers(0, 21, (H, W)).astype(np.uint8)
    mask[0, :] = 255  # object borders are 255 in VOC
    return mask


# --------------------------------------------------------------------------------------------
# PASCAL VOC 2012


def make_voc(base: Path, aug_list: bool = False) -> Path:
    """``base/VOCdevkit/VOC2012`` with train (2), val (1) and SBD masks for 4 stems (one val)."""
    voc = base / "VOCdevkit" / "VOC2012"
    stems = ["2007_000032", "2007_000039", "2007_000063", "2008_000008"]
    for i, stem in enumerate(stems):
        _save_rgb(voc / "JPEGImages" / f"{stem}.jpg", i, "JPEG")
        _save_palette_png(voc / "SegmentationClass" / f"{stem}.png", _voc_mask(i), VOC_PALETTE)
        _save_gray_png(voc / "SegmentationClassAug" / f"{stem}.png", _voc_mask(i))
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("2007_000032\n2007_000039\n")
    (lists / "val.txt").write_text("2007_000063\n")
    (lists / "trainval.txt").write_text("2007_000032\n2007_000039\n2007_000063\n")
    if aug_list:
        # DeepLab's published list style: image and mask paths on one line.
        (lists / "train_aug.txt").write_text(
            "/JPEGImages/2008_000008.jpg /SegmentationClassAug/2008_000008.png\n"
        )
    return voc


def test_voc_colormap_matches_known_colours():
    colours = voc_colormap(256)
    assert colours[0] == (0, 0, 0)
    assert colours[1] == (128, 0, 0)  # aeroplane
    assert colours[15] == (192, 128, 128)  # person
    assert colours[20] == (0, 64, 128)  # tvmonitor
    assert len(set(colours)) == 256
    assert len(VOC_CLASSES) == len(VOC_PALETTE) == 21


@pytest.mark.parametrize("where", ["", "VOCdevkit", "VOCdevkit/VOC2012"])
def test_voc_detected_from_any_level(tmp_path, where):
    make_voc(tmp_path)
    ds = open_dataset(str(tmp_path / where), "train")
    assert ds.name == "voc" and ds.classes == VOC_CLASSES
    assert [ds[i].name for i in range(len(ds))] == ["2007_000032", "2007_000039"]
    assert "PASCAL VOC 2012" in ds.layout


def test_voc_palette_masks_read_as_indices_not_colours(tmp_path):
    make_voc(tmp_path)
    ds = open_dataset(str(tmp_path), "val")
    sample = ds[0]
    assert sample.image.shape == (H, W, 3) and sample.image.dtype == np.uint8
    assert sample.mask.dtype == np.uint8 and sample.mask.shape == (H, W)
    np.testing.assert_array_equal(sample.mask, _voc_mask(2))
    assert (sample.mask[0] == 255).all()  # border stays ignore


def test_voc_train_aug_without_list_excludes_val(tmp_path):
    make_voc(tmp_path)
    ds = open_dataset(str(tmp_path), "train_aug")
    names = [ds[i].name for i in range(len(ds))]
    assert names == ["2007_000032", "2007_000039", "2008_000008"]  # 2007_000063 is val
    assert "SegmentationClassAug" in ds.layout
    np.testing.assert_array_equal(ds[2].mask, _voc_mask(3))


def test_voc_train_aug_list_file_with_paths(tmp_path):
    make_voc(tmp_path, aug_list=True)
    ds = open_dataset(str(tmp_path), "train_aug")
    assert [ds[i].name for i in range(len(ds))] == ["2008_000008"]


def test_voc_unknown_split_and_missing_aug(tmp_path):
    voc = make_voc(tmp_path)
    with pytest.raises(EdgeDeeplabError, match="splits: train, trainval, val, train_aug"):
        open_dataset(str(tmp_path), "test")
    for p in (voc / "SegmentationClassAug").iterdir():
        p.unlink()
    (voc / "SegmentationClassAug").rmdir()
    with pytest.raises(EdgeDeeplabError, match="SegmentationClassAug"):
        open_dataset(str(tmp_path), "train_aug")


def test_voc_listed_stem_without_files_is_a_problem_not_a_sample(tmp_path):
    voc = make_voc(tmp_path)
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000032\n2009_999999\n")
    (voc / "JPEGImages" / "2007_000039.jpg").unlink()
    ds = open_dataset(str(tmp_path), "trainval")
    assert [ds[i].name for i in range(len(ds))] == ["2007_000032", "2007_000063"]
    assert any("2007_000039" in p.message and "has no image" in p.message for p in ds.problems)
    ds = open_dataset(str(tmp_path), "train")
    assert any("2009_999999" in p.message for p in ds.problems)


# --------------------------------------------------------------------------------------------
# Cityscapes


def make_cityscapes(base: Path) -> Path:
    """Two train frames in two cities, one val frame, label ids covering evaluated and void ids."""
    label_ids = np.array([0, 1, 4, 7, 8, 9, 11, 17, 19, 24, 26, 31, 33, 255], dtype=np.uint8)
    frames = {"train": ["aachen_000000_000019", "bochum_000000_000313"], "val": ["frankfurt_000000_000294"]}
    for split, names in frames.items():
        for i, frame in enumerate(names):
            city = frame.split("_")[0]
            _save_rgb(base / "leftImg8bit" / split / city / f"{frame}_leftImg8bit.png", i)
            mask = np.resize(np.roll(label_ids, i), H * W).reshape(H, W)
            _save_gray_png(base / "gtFine" / split / city / f"{frame}_gtFine_labelIds.png", mask)
            # The other gtFine files of the published layout must be ignored.
            _save_gray_png(base / "gtFine" / split / city / f"{frame}_gtFine_instanceIds.png", mask)
    return base


def test_cityscapes_detects_and_maps_label_ids_to_train_ids(tmp_path):
    root = make_cityscapes(tmp_path / "cityscapes")
    ds = open_dataset(str(root), "train")
    assert ds.name == "cityscapes"
    assert ds.classes == CITYSCAPES_CLASSES and len(ds.classes) == 19
    assert ds.palette[0] == (128, 64, 128) and ds.palette[18] == (119, 11, 32)
    assert len(CITYSCAPES_PALETTE) == 19
    assert [ds[i].name for i in range(len(ds))] == ["aachen_000000_000019", "bochum_000000_000313"]
    stored = np.asarray(Image.open(root / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png"))
    mask = ds[0].mask
    expected = {0: 255, 1: 255, 4: 255, 7: 0, 8: 1, 9: 255, 11: 2, 17: 5, 19: 6, 24: 11, 26: 13, 31: 16, 33: 18, 255: 255}
    for label_id, train_id in expected.items():
        assert (mask[stored == label_id] == train_id).all(), label_id
    assert len(open_dataset(str(root), "val")) == 1


def test_cityscapes_unmatched_frame_and_unknown_split(tmp_path):
    root = make_cityscapes(tmp_path)
    (root / "gtFine/train/bochum/bochum_000000_000313_gtFine_labelIds.png").unlink()
    ds = open_dataset(str(root), "train")
    assert len(ds) == 1
    assert any("bochum_000000_000313_leftImg8bit.png has no mask" in p.message for p in ds.problems)
    with pytest.raises(EdgeDeeplabError, match="splits: train, val"):
        open_dataset(str(root), "test")


# --------------------------------------------------------------------------------------------
# Plain folder


def make_folder(base: Path, n: int = 30, classes: str = "classes: [background, person, car]\n") -> Path:
    for i in range(n):
        _save_rgb(base / "images" / f"img_{i:03d}.jpg", i, "JPEG")
        mask = np.random.default_rng(i).integers(0, 3, (H, W)).astype(np.uint8)
        _save_gray_png(base / "masks" / f"img_{i:03d}.png", mask)
    (base / "classes.yaml").write_text(classes)
    return base


def test_folder_hash_split_is_deterministic_and_disjoint(tmp_path):
    root = make_folder(tmp_path / "mydata", n=60)
    train, val, every = (open_dataset(str(root), s) for s in ("train", "val", "all"))
    train_names = {train[i].name for i in range(len(train))}
    val_names = {val[i].name for i in range(len(val))}
    assert train_names.isdisjoint(val_names)
    assert len(train) + len(val) == len(every) == 60
    assert val_names == {f"img_{i:03d}" for i in range(60) if in_val(f"img_{i:03d}")}
    assert 1 <= len(val) <= 12  # about a tenth
    assert train.name == "mydata" and train.classes == ["background", "person", "car"]
    assert train.palette == voc_colormap(3)  # default palette
    assert "hash" in train.layout


def test_folder_split_lists_and_subfolders(tmp_path):
    root = make_folder(tmp_path / "lists", n=4)
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("# two of them\nimg_000\nimg_002.jpg\n")
    ds = open_dataset(str(root), "train")
    assert [ds[i].name for i in range(len(ds))] == ["img_000", "img_002"]
    with pytest.raises(EdgeDeeplabError, match="no splits/val.txt; splits found: train"):
        open_dataset(str(root), "val")

    sub = tmp_path / "sub"
    for split, stems in {"train": ["a", "b"], "val": ["c"]}.items():
        for j, stem in enumerate(stems):
            _save_rgb(sub / "images" / split / f"{stem}.png", j)
            _save_gray_png(sub / "masks" / split / f"{stem}.png", np.ones((H, W), np.uint8))
    (sub / "classes.yaml").write_text("classes: [background, thing]\n")
    assert [open_dataset(str(sub), "val")[0].name] == ["c"]
    assert len(open_dataset(str(sub), "all")) == 3


def test_folder_classes_yaml_palette_and_ignore_index(tmp_path):
    root = make_folder(
        tmp_path / "d", n=2,
        classes="classes: [bg, road]\npalette: [[0, 0, 0], [128, 64, 128]]\nignore_index: 250\n",
    )
    mask = np.zeros((H, W), np.uint8)
    mask[:, :8] = 1
    mask[:, -4:] = 250
    _save_gray_png(root / "masks" / "img_000.png", mask)
    # A colour mask is decoded through the palette given in classes.yaml.
    colour = np.zeros((H, W, 3), np.uint8)
    colour[:5] = (128, 64, 128)
    Image.fromarray(colour).save(root / "masks" / "img_001.png")
    ds = open_dataset(str(root), "all")
    assert ds.palette == [(0, 0, 0), (128, 64, 128)]
    by_name = {ds[i].name: ds[i] for i in range(len(ds))}
    got = by_name["img_000"].mask
    assert (got[:, -4:] == 255).all() and (got[:, :8] == 1).all() and (got[:, 8:-4] == 0).all()
    assert (by_name["img_001"].mask[:5] == 1).all() and (by_name["img_001"].mask[5:] == 0).all()


@pytest.mark.parametrize(
    "text, message",
    [
        ("classes: []\n", "non-empty list"),
        ("classes: [a, a]\n", "appears twice"),
        ("classes: [a, b]\nignore_index: 1\n", "ignore_index"),
        ("classes: [a, b]\npalette: [[0, 0, 0]]\n", "one \\[r, g, b\\]"),
        ("classes: [a]\ncolours: []\n", "unknown key"),
        ("classes: [a\n", "cannot read"),
    ],
)
def test_folder_bad_classes_yaml(tmp_path, text, message):
    root = make_folder(tmp_path, n=2, classes=text)
    with pytest.raises(EdgeDeeplabError, match=message):
        open_dataset(str(root), "all")


def test_folder_without_classes_yaml_says_what_to_add(tmp_path):
    root = make_folder(tmp_path, n=2)
    (root / "classes.yaml").unlink()
    with pytest.raises(EdgeDeeplabError, match="classes.yaml"):
        open_dataset(str(root), "train")


def test_unknown_label_raised_when_the_sample_is_read(tmp_path):
    root = make_folder(tmp_path, n=2)
    bad = np.zeros((H, W), np.uint8)
    bad[3, 3] = 7
    _save_gray_png(root / "masks" / "img_001.png", bad)
    ds = open_dataset(str(root), "all")  # opening lists files; it does not read them
    ds[0]
    with pytest.raises(EdgeDeeplabError, match=r"img_001\.png has label 7") as info:
        ds[1]
    assert isinstance(info.value, SampleProblem) and info.value.kind == UNKNOWN_LABEL


def test_open_dataset_unknown_paths(tmp_path):
    with pytest.raises(EdgeDeeplabError, match="does not exist"):
        open_dataset(str(tmp_path / "nope"), "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgeDeeplabError, match="not a dataset"):
        open_dataset(str(tmp_path / "empty"), "train")


# --------------------------------------------------------------------------------------------
# datasets check


def test_datasets_check_clean_folder(tmp_path, capsys):
    root = make_folder(tmp_path / "good", n=6)
    assert main(["datasets", "check", str(root), "--split", "all"]) == 0
    out = capsys.readouterr().out
    assert "folder dataset at" in out and "all: 6 samples, 6 read without problems" in out
    assert "no problems found" in out
    # Histogram: pixels per class over the 6 masks, and the images holding each class.
    masks = [np.random.default_rng(i).integers(0, 3, (H, W)) for i in range(6)]
    person = sum(int((m == 1).sum()) for m in masks)
    line = next(line for line in out.splitlines() if " person " in line)
    assert f"{person:,d}" in line and line.split()[-1] == "6"


def test_datasets_check_broken_folder_lists_problems_and_exits_1(tmp_path, capsys):
    root = make_folder(tmp_path / "broken", n=6)
    (root / "masks" / "img_000.png").unlink()  # image without mask
    _save_gray_png(root / "masks" / "orphan.png", np.zeros((H, W), np.uint8))  # mask without image
    bad = np.zeros((H, W), np.uint8)
    bad[0, 0] = 9
    _save_gray_png(root / "masks" / "img_001.png", bad)  # unknown label
    _save_gray_png(root / "masks" / "img_002.png", np.zeros((H + 1, W), np.uint8))  # size mismatch
    (root / "images" / "img_003.jpg").write_bytes(b"\xff\xd8 not a jpeg")  # unreadable
    Image.fromarray(_image(0)).save(root / "masks" / "img_004.jpg", format="JPEG")  # lossy mask
    code = main(["datasets", "check", str(root), "--split", "all", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1
    assert "all: 5 samples, 2 read without problems" in out  # 000 and orphan are not samples
    assert "6 problems" in out
    assert "img_000.jpg has no mask" in out
    assert "orphan.png has no image" in out
    assert "img_001.png has label 9" in out
    assert "is 32x24 but its mask" in out and "is 32x25" in out
    assert "cannot read image" in out and "img_003.jpg" in out
    assert "img_004.jpg is .jpg, a lossy format" in out


def test_datasets_check_limits_listed_problems_but_counts_all(tmp_path):
    root = make_folder(tmp_path, n=5)
    for i in range(5):
        _save_gray_png(root / "masks" / f"img_{i:03d}.png", np.full((H, W), 4, np.uint8))
    result = check_dataset(open_dataset(str(root), "all"), "all", max_problems=2, progress=False)
    assert result.problem_count == 5 and len(result.problems) == 2
    assert result.problem_kinds[UNKNOWN_LABEL] == 5 and result.readable == 0


def test_datasets_check_cityscapes_histogram_uses_train_ids(tmp_path, capsys):
    root = make_cityscapes(tmp_path)
    assert main(["datasets", "check", str(root), "--split", "val", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "Cityscapes at" in out and "val: 1 samples" in out
    assert " bicycle " in out and " 255 ignore " in out


def test_datasets_check_unopenable_dataset_exits_2(tmp_path, capsys):
    root = make_folder(tmp_path, n=2)
    (root / "classes.yaml").unlink()
    assert main(["datasets", "check", str(root)]) == 2
    assert "classes.yaml" in capsys.readouterr().err
