"""The synthetic dataset, dataset specs and the image / mask readers (edge_deeplab.data)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_deeplab.data import READERS, Sample, SegmentationDataset, open_dataset, register_reader
from edge_deeplab.data.masks import read_mask
from edge_deeplab.cli import main
from edge_deeplab.data.synthetic import CLASSES, PALETTE, SyntheticShapes
from runtime.errors import EdgeDeeplabError
from runtime.images import IGNORE_COLOUR, read_image, to_rgb_uint8, write_mask

REPO = Path(__file__).resolve().parents[1]


# --- synthetic dataset ---------------------------------------------------------------------------


def test_same_seed_same_bytes_and_fresh_objects_agree():
    a, b = SyntheticShapes("train", seed=3, n=5), SyntheticShapes("train", seed=3, n=5)
    for i in range(5):
        assert a[i].image.tobytes() == b[i].image.tobytes()
        assert a[i].mask.tobytes() == b[i].mask.tobytes()
        assert a[i].name == f"train_{i:05d}"


def test_different_seed_split_or_index_differs():
    base = SyntheticShapes("train", seed=0)[0]
    assert not np.array_equal(base.image, SyntheticShapes("train", seed=1)[0].image)
    assert not np.array_equal(base.image, SyntheticShapes("val", seed=0)[0].image)
    assert not np.array_equal(base.image, SyntheticShapes("train", seed=0)[1].image)


def test_sample_format_and_mask_values():
    ds = SyntheticShapes("val", size=96, n=10)
    for sample in ds:
        assert sample.image.shape == (96, 96, 3) and sample.image.dtype == np.uint8
        assert sample.mask.shape == (96, 96) and sample.mask.dtype == np.uint8
        assert sample.mask.max() < len(CLASSES)  # synthetic masks are exact: no ignore pixels


def test_every_class_appears_in_val_split():
    ds = SyntheticShapes("val")
    counts = np.zeros(len(CLASSES), dtype=np.int64)
    for sample in ds:
        counts += np.bincount(sample.mask.ravel(), minlength=len(CLASSES))
    assert len(ds) == 100
    assert (counts > 0).all(), dict(zip(CLASSES, counts.tolist()))
    # Objects are a real share of the pixels, and no class is a vanishing sliver.
    share = counts / counts.sum()
    assert share[0] < 0.9
    assert (share[1:] > 0.002).all(), dict(zip(CLASSES, share.round(4).tolist()))


def test_thin_wires_are_thin():
    """Wire pixels mostly have a non-wire pixel within 2 px: they test fine output strides."""
    sample = SyntheticShapes("val")[0]
    wire = sample.mask == CLASSES.index("wire")
    assert wire.any()
    eroded = wire.copy()
    for shift in (1, 2):
        for axis in (0, 1):
            eroded &= np.roll(wire, shift, axis) & np.roll(wire, -shift, axis)
    assert eroded.sum() < 0.05 * wire.sum()


def test_colour_is_not_a_per_pixel_label():
    """The same exact RGB value occurs under different classes: colour alone does not decide."""
    ds = SyntheticShapes("val", n=20)
    owners: dict[int, set[int]] = {}
    for sample in ds:
        img = sample.image.astype(np.int64) // 16  # coarse colour bins
        code = (img[..., 0] << 8 | img[..., 1] << 4 | img[..., 2]).ravel()
        for c, m in set(zip(code.tolist(), sample.mask.ravel().tolist())):
            owners.setdefault(c, set()).add(m)
    shared = sum(1 for v in owners.values() if len(v) > 1)
    assert shared > 0.1 * len(owners)


def test_cache_returns_the_same_sample_and_indexing_errors():
    ds = SyntheticShapes("val", n=3, cache=True)
    assert ds[1] is ds[1]
    assert ds[-1].name == "val_00002"
    with pytest.raises(IndexError):
        ds[3]
    assert [s.name for s in ds] == ["val_00000", "val_00001", "val_00002"]


def test_bad_split_and_sizes_are_user_errors():
    with pytest.raises(EdgeDeeplabError, match="splits"):
        SyntheticShapes("holdout")
    with pytest.raises(EdgeDeeplabError, match="size"):
        SyntheticShapes(size=8)
    with pytest.raises(EdgeDeeplabError, match="n from 1 to"):
        SyntheticShapes(n=0)
    with pytest.raises(EdgeDeeplabError, match="size must be 32 to 2048"):  # not 149 GiB of noise field
        SyntheticShapes(size=200_000)
    with pytest.raises(EdgeDeeplabError, match="seed must be 0 or more"):
        SyntheticShapes(seed=-1)


def test_preview_command_writes_pngs_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "preview"
    preview = ["datasets", "preview", "synthetic:size=64", "--out", str(out), "-n", "2"]
    assert main(preview) == 0
    files = sorted(out.glob("*.png"))
    assert [f.name for f in files] == ["val_00000.png", "val_00001.png"]
    pair = np.asarray(Image.open(files[0]))
    assert pair.shape == (64, 128, 3)
    sample = SyntheticShapes("val", size=64)[0]
    assert np.array_equal(pair[:, :64], sample.image)
    assert np.array_equal(pair[:, 64:], np.asarray(PALETTE, np.uint8)[sample.mask])
    assert "7 classes" in capsys.readouterr().out
    before = files[0].read_bytes()
    assert main(preview[:-1] + ["3"]) == 2  # val_00002 would be new, but val_00000 exists: nothing is written
    assert "already exists" in capsys.readouterr().err and not (out / "val_00002.png").exists()
    assert main(preview + ["--force"]) == 0 and files[0].read_bytes() == before


# --- dataset specs -------------------------------------------------------------------------------


def test_open_dataset_synthetic_specs():
    ds = open_dataset("synthetic", "val")
    assert isinstance(ds, SyntheticShapes) and len(ds) == 100 and ds.size == 256
    ds = open_dataset("synthetic:seed=3, size=64,n=7", "train")
    assert (ds.seed, ds.size, len(ds), ds.split) == (3, 64, 7, "train")
    assert ds.classes == CLASSES and ds.palette == PALETTE and ds.ignore_index == 255
    assert ds.num_classes == 7


@pytest.mark.parametrize("spec, message", [
    ("synthetic:colour=red", "bad synthetic option"),
    ("synthetic:seed", "bad synthetic option"),
    ("synthetic:n=many", "needs a number"),
])
def test_open_dataset_bad_synthetic_options(spec, message):
    with pytest.raises(EdgeDeeplabError, match=message):
        open_dataset(spec, "train")


def test_open_dataset_paths_without_a_reader(tmp_path):
    with pytest.raises(EdgeDeeplabError, match="does not exist"):
        open_dataset(str(tmp_path / "nowhere"), "train")
    with pytest.raises(EdgeDeeplabError, match="not a dataset"):
        open_dataset(str(tmp_path), "train")


class _OneImage(SegmentationDataset):
    """A minimal real reader: one file-less sample, to exercise the registry."""

    name = "one"
    classes = ["background", "thing"]
    palette = [(0, 0, 0), (255, 0, 0)]

    def __init__(self, split: str) -> None:
        self.split = split

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> Sample:
        self._check_index(index)
        return Sample(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8), "one")


def test_register_reader_extends_open_dataset(tmp_path):
    marker = tmp_path / "ONE"
    marker.write_text("")
    entry = (lambda spec: (Path(spec) / "ONE").is_file(), lambda spec, split: _OneImage(split))
    register_reader(*entry)
    try:
        ds = open_dataset(str(tmp_path), "val")
        assert isinstance(ds, _OneImage) and ds.split == "val" and list(ds)[0].name == "one"
    finally:
        READERS.remove(entry)


def test_data_modules_do_not_import_torch():
    code = (
        "import sys, edge_deeplab.data, edge_deeplab.data.synthetic, edge_deeplab.data.transforms, "
        "edge_deeplab.data.masks, edge_deeplab.metrics; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- image and mask files ------------------------------------------------------------------------


def test_read_image_converts_modes(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(gray, "L").save(tmp_path / "gray.png")
    assert np.array_equal(read_image(tmp_path / "gray.png"), np.repeat(gray[:, :, None], 3, 2))

    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 10
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    out = read_image(tmp_path / "rgba.png")
    assert out.shape == (3, 4, 3) and (out[..., 0] == 200).all() and (out[..., 1:] == 0).all()

    pal = Image.frombytes("P", (2, 1), bytes([0, 1]))
    pal.putpalette([10, 20, 30, 40, 50, 60] + [0] * 762)
    pal.save(tmp_path / "pal.png")
    assert read_image(tmp_path / "pal.png").tolist() == [[[10, 20, 30], [40, 50, 60]]]

    wide = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    assert read_image(tmp_path / "wide.png")[0, :, 0].tolist() == [0, 100, 255]

    # Float files are [0, 1] as float arrays are (NaN reads as 0), never rescaled by their brightest pixel.
    floats = np.array([[0.0, 0.5, 1.0, np.nan], [0.002, 0.002, 0.002, 0.002]], dtype=np.float32)
    Image.fromarray(floats, "F").save(tmp_path / "float.tif")
    assert read_image(tmp_path / "float.tif")[..., 0].tolist() == [[0, 128, 255, 0], [1, 1, 1, 1]]
    assert np.array_equal(read_image(tmp_path / "float.tif"), to_rgb_uint8(floats))


def test_read_image_bad_files_name_the_file(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(EdgeDeeplabError, match="broken.jpg"):
        read_image(broken)
    truncated = tmp_path / "truncated.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 7).save(tmp_path / "full.png")
    truncated.write_bytes((tmp_path / "full.png").read_bytes()[:60])
    with pytest.raises(EdgeDeeplabError, match="truncated.png"):
        read_image(truncated)
    with pytest.raises(EdgeDeeplabError, match="missing.png"):
        read_image(tmp_path / "missing.png")


def test_mask_round_trip_keeps_indices(tmp_path):
    mask = np.array([[0, 1, 2], [6, 255, 1]], dtype=np.uint8)
    path = write_mask(tmp_path / "m.png", mask, PALETTE)
    with Image.open(path) as img:
        assert img.mode == "P"
        colours = img.getpalette()
    assert colours[3:6] == list(PALETTE[1]) and colours[255 * 3:256 * 3] == list(IGNORE_COLOUR)
    assert np.array_equal(read_mask(path), mask)
    with pytest.raises(EdgeDeeplabError, match="already exists"):
        write_mask(path, mask, PALETTE, overwrite=False)
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]  # no temporary left behind


def test_read_mask_formats(tmp_path):
    labels = np.array([[0, 1], [2, 255]], dtype=np.uint8)
    Image.fromarray(labels, "L").save(tmp_path / "gray.png")
    assert np.array_equal(read_mask(tmp_path / "gray.png"), labels)

    Image.fromarray(np.array([[3, 400]], dtype=np.uint16)).save(tmp_path / "wide.png")
    with pytest.raises(EdgeDeeplabError, match="400"):
        read_mask(tmp_path / "wide.png")

    rgb = np.array([[PALETTE[0], PALETTE[2]], [PALETTE[5], IGNORE_COLOUR]], dtype=np.uint8)
    Image.fromarray(rgb, "RGB").save(tmp_path / "colour.png")
    with pytest.raises(EdgeDeeplabError, match="colour image"):
        read_mask(tmp_path / "colour.png")
    assert read_mask(tmp_path / "colour.png", palette=PALETTE).tolist() == [[0, 2], [5, 255]]
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb, "RGB").save(tmp_path / "odd.png")
    with pytest.raises(EdgeDeeplabError, match=r"\(1, 2, 3\)"):
        read_mask(tmp_path / "odd.png", palette=PALETTE)


def test_write_mask_rejects_non_masks(tmp_path):
    for not_a_mask in (np.zeros((2, 2), np.float32), np.zeros((2, 2, 3), np.uint8), np.full((2, 2), -1)):
        with pytest.raises(EdgeDeeplabError, match="HxW class indices"):
            write_mask(tmp_path / "m.png", not_a_mask, PALETTE)
