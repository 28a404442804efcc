"""Weights from elsewhere: torchvision backbone state dicts and VainF/DeepLabV3Plus-Pytorch checkpoints.

No file can be downloaded here, so the files are made: a torchvision-format state dict is our
backbone's tensors plus the ImageNet-only keys torchvision has, and a VainF checkpoint is one of
our models' state dicts renamed into VainF's key layout by rules written out below from VainF's
source (``network/modeling.py``, ``network/_deeplab.py``), independently of the importer's table.
Key names and shapes that torchvision and VainF files are known to have are asserted as facts.
"""

from __future__ import annotations

import re
import zipfile

import numpy as np
import pytest

from edge_deeplab.cli import main
from edge_deeplab.models.config import ModelConfig
from runtime.errors import EdgeDeeplabError

torch = pytest.importorskip("torch")

from edge_deeplab.checkpoint import load_checkpoint  # noqa: E402 - after the torch skip guard
from edge_deeplab.data.cityscapes import CITYSCAPES_CLASSES  # noqa: E402
from edge_deeplab.data.voc import VOC_CLASSES  # noqa: E402
from edge_deeplab.models import build_model  # noqa: E402
from edge_deeplab.weights import (  # noqa: E402
    import_vainf,
    load_backbone_weights,
    output_stride_from_name,
)


def _randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights and BN statistics, so equal outputs mean every tensor landed in its place."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.1)
    return model.eval()


def _torchvision_state(model, extra: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """The backbone's tensors under torchvision's names, plus the ImageNet-only tensors it has."""
    state = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    state.update({k: torch.randn(shape) for k, shape in extra.items()})
    return state


MOBILENET_IMAGENET_ONLY = {
    "features.18.0.weight": (1280, 320, 1, 1),
    "features.18.1.weight": (1280,),
    "features.18.1.bias": (1280,),
    "features.18.1.running_mean": (1280,),
    "features.18.1.running_var": (1280,),
    "classifier.1.weight": (1000, 1280),
    "classifier.1.bias": (1000,),
}


# --------------------------------------------------------------------------------------------
# torchvision backbone weights


def test_mobilenet_backbone_weights_load_and_head_keeps_init(tmp_path):
    source = _randomize(build_model(ModelConfig("mobilenetv2", 21)), seed=1)
    state = _torchvision_state(source, MOBILENET_IMAGENET_ONLY)
    # Facts about torchvision's mobilenet_v2 state dict that our names must match.
    assert state["features.1.conv.0.0.weight"].shape == (32, 1, 3, 3)
    assert state["features.2.conv.0.0.weight"].shape == (96, 16, 1, 1)
    assert state["features.17.conv.2.weight"].shape == (320, 960, 1, 1)
    # Files saved before PyTorch 0.4.1 have no BN step counters.
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "mobilenet_v2-b0353104.pth"
    torch.save(state, path)

    target = build_model(ModelConfig("mobilenetv2", 5))
    head_before = target.classifier.weight.clone()
    load_backbone_weights(target, path)
    for key, value in target.backbone.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, source.backbone.state_dict()[key]), key
    assert torch.equal(target.classifier.weight, head_before)


def test_resnet50_backbone_weights_load(tmp_path):
    source = _randomize(build_model(ModelConfig("resnet50", 21)), seed=2)
    state = _torchvision_state(source, {"fc.weight": (1000, 2048), "fc.bias": (1000,)})
    assert state["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert state["layer4.2.conv3.weight"].shape == (2048, 512, 1, 1)
    # DataParallel-saved files prefix every key with "module.".
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "r50.pth")
    target = build_model(ModelConfig("resnet50", 21))
    load_backbone_weights(target, tmp_path / "r50.pth")
    assert torch.equal(target.backbone.layer3[5].conv2.weight, source.backbone.layer3[5].conv2.weight)


def test_backbone_weights_errors_name_the_problem(tmp_path):
    source = build_model(ModelConfig("mobilenetv2", 21))
    good = _torchvision_state(source, MOBILENET_IMAGENET_ONLY)
    mobilenet = build_model(ModelConfig("mobilenetv2", 21))

    extra = dict(good, **{"features.3.conv.9.weight": torch.zeros(1)})
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(EdgeDeeplabError, match=r"'features\.3\.conv\.9\.weight' .* has no place"):
        load_backbone_weights(mobilenet, tmp_path / "extra.pth")

    missing = {k: v for k, v in good.items() if k != "features.5.conv.1.0.weight"}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(EdgeDeeplabError, match=r"needs 'features\.5\.conv\.1\.0\.weight'"):
        load_backbone_weights(mobilenet, tmp_path / "missing.pth")

    torch.save(good, tmp_path / "w1.pth")
    narrow = build_model(ModelConfig("mobilenetv2", 21, width_mult=0.5))
    with pytest.raises(EdgeDeeplabError, match=r"'features\.0\.0\.weight' is \(32, 3, 3, 3\) in .* but \(16, 3, 3, 3\)"):
        load_backbone_weights(narrow, tmp_path / "w1.pth")

    resnet_state = _torchvision_state(build_model(ModelConfig("resnet50", 21)), {"fc.weight": (1000, 2048)})
    torch.save(resnet_state, tmp_path / "r50.pth")
    with pytest.raises(EdgeDeeplabError, match="holds resnet50 weights but the model's backbone is mobilenetv2"):
        load_backbone_weights(mobilenet, tmp_path / "r50.pth")

    with pytest.raises(EdgeDeeplabError, match="no torchvision ImageNet weights for xception65"):
        load_backbone_weights(build_model(ModelConfig("xception65", 21)), tmp_path / "w1.pth")
    with pytest.raises(EdgeDeeplabError, match="does not exist"):
        load_backbone_weights(mobilenet, tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(EdgeDeeplabError, match="not a readable PyTorch file"):
        load_backbone_weights(mobilenet, tmp_path / "junk.pth")
    torch.save({"model_state": good}, tmp_path / "vainf.pth")
    with pytest.raises(EdgeDeeplabError, match="import-checkpoint"):
        load_backbone_weights(mobilenet, tmp_path / "vainf.pth")


class _Pickled:
    """Not a tensor: weights-only loading must refuse to unpickle it."""


def test_files_needing_code_to_unpickle_are_refused(tmp_path):
    torch.save({"weights": torch.zeros(1), "obj": _Pickled()}, tmp_path / "code.pth")
    with pytest.raises(EdgeDeeplabError, match="pickled Python objects"):
        load_backbone_weights(build_model(ModelConfig("mobilenetv2", 21)), tmp_path / "code.pth")


# --------------------------------------------------------------------------------------------
# VainF/DeepLabV3Plus-Pytorch checkpoints

# Our key -> VainF key, written from VainF's module names: DeepLabV3(backbone, classifier) with
# backbone = IntermediateLayerGetter over MobileNetV2 with low_level_features = features[:4] and
# high_level_features = features[4:-1] (slices keep the child names), or over ResNet (conv1, bn1,
# layer1-4); classifier = DeepLabHeadV3Plus(project, aspp(convs[0-4], project), classifier).
# ASPPPooling is Sequential(AdaptiveAvgPool2d, Conv2d, BN, ReLU): its conv is index 1.
_TO_VAINF = [
    (r"^backbone\.features\.([0-3])\.", r"backbone.low_level_features.\1."),
    (r"^backbone\.features\.(\d+)\.", r"backbone.high_level_features.\1."),
    (r"^backbone\.", "backbone."),
    (r"^aspp\.branches\.4\.conv\.0\.", "classifier.aspp.convs.4.1."),
    (r"^aspp\.branches\.4\.conv\.1\.", "classifier.aspp.convs.4.2."),
    (r"^aspp\.branches\.([0-3])\.", r"classifier.aspp.convs.\1."),
    (r"^aspp\.project\.0\.", "classifier.aspp.project."),
    (r"^decoder\.reduce\.", "classifier.project."),
    (r"^decoder\.convs\.0\.0\.", "classifier.classifier.0."),
    (r"^decoder\.convs\.0\.1\.", "classifier.classifier.1."),
    (r"^classifier\.", "classifier.classifier.3."),
]


def _vainf_state(model) -> dict[str, torch.Tensor]:
    state = {}
    for key, value in model.state_dict().items():
        pattern, repl = next((p, r) for p, r in _TO_VAINF if re.match(p, key))
        state[re.sub(pattern, repl, key, count=1)] = value.clone()
    return state


def _vainf_file(path, model, best_score=np.float64(0.7215)):
    """A file laid out as VainF's main.py save_ckpt writes it (best_score is a numpy float)."""
    torch.save(
        {
            "cur_itrs": 30000,
            "model_state": _vainf_state(model),
            "optimizer_state": {"state": {}, "param_groups": [{"lr": 0.01, "params": [0, 1]}]},
            "scheduler_state": {"last_epoch": 30000},
            "best_score": best_score,
        },
        path,
    )
    return path


def _reference(backbone: str, num_classes: int = 21, seed: int = 3):
    padding = "vainf" if backbone == "mobilenetv2" else "same"
    config = ModelConfig(backbone, num_classes, output_stride=16, decoder_convs=1, separable=False, padding=padding)
    return _randomize(build_model(config), seed)


def test_vainf_mobilenet_imports_with_identical_logits(tmp_path, capsys):
    reference = _reference("mobilenetv2")
    vainf = _vainf_state(reference)
    # Names and shapes a real best_deeplabv3plus_mobilenet_voc_os16.pth holds.
    for key, shape in {
        "backbone.low_level_features.0.0.weight": (32, 3, 3, 3),
        "backbone.low_level_features.3.conv.2.weight": (24, 144, 1, 1),
        "backbone.high_level_features.4.conv.0.0.weight": (144, 24, 1, 1),
        "backbone.high_level_features.17.conv.2.weight": (320, 960, 1, 1),
        "classifier.project.0.weight": (48, 24, 1, 1),
        "classifier.aspp.convs.0.0.weight": (256, 320, 1, 1),
        "classifier.aspp.convs.3.0.weight": (256, 320, 3, 3),
        "classifier.aspp.convs.4.1.weight": (256, 320, 1, 1),
        "classifier.aspp.project.0.weight": (256, 1280, 1, 1),
        "classifier.classifier.0.weight": (256, 304, 3, 3),
        "classifier.classifier.3.weight": (21, 256, 1, 1),
        "classifier.classifier.3.bias": (21,),
    }.items():
        assert vainf[key].shape == shape, key
    assert not any(k.startswith("backbone.high_level_features.18") for k in vainf)

    src = _vainf_file(tmp_path / "best_deeplabv3plus_mobilenet_voc_os16.pth", reference)
    out = tmp_path / "ours.pt"
    assert main(["import-checkpoint", str(src), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mobilenetv2" in printed and "21 classes" in printed and "0.7215" in printed

    ckpt = load_checkpoint(out)
    assert ckpt.classes == VOC_CLASSES and ckpt.dataset == "voc"
    assert ckpt.model_config.decoder_convs == 1 and ckpt.model_config.output_stride == 16
    assert ckpt.model_config.padding == "vainf"
    assert ckpt.mean == pytest.approx([0.485, 0.456, 0.406]) and ckpt.std == pytest.approx([0.229, 0.224, 0.225])
    assert ckpt.metrics["reported_miou"] == pytest.approx(0.7215)
    imported = ckpt.build_model()
    x = torch.randn(2, 3, 45, 61, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(imported(x), reference(x))


@pytest.mark.slow
def test_vainf_resnet50_cityscapes_imports_with_identical_logits(tmp_path):
    reference = _reference("resnet50", num_classes=19)
    vainf = _vainf_state(reference)
    assert vainf["backbone.layer4.2.conv3.weight"].shape == (2048, 512, 1, 1)
    assert vainf["classifier.project.0.weight"].shape == (48, 256, 1, 1)
    assert vainf["classifier.aspp.convs.1.0.weight"].shape == (256, 2048, 3, 3)
    src = _vainf_file(tmp_path / "best_deeplabv3plus_resnet50_cityscapes_os8.pth", reference, best_score=0.77)
    ckpt = import_vainf(src, backbone="resnet50")
    assert ckpt.classes == CITYSCAPES_CLASSES and ckpt.dataset == "cityscapes"
    assert ckpt.model_config.output_stride == 8  # from the file name
    imported = ckpt.build_model(output_stride=16)
    x = torch.randn(1, 3, 40, 56, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(imported(x), reference(x))


def test_vainf_key_without_a_place_is_named(tmp_path):
    reference = _reference("mobilenetv2")
    state = _vainf_state(reference)
    state["classifier.aux_classifier.0.weight"] = torch.zeros(3)
    torch.save({"model_state": state}, tmp_path / "aux.pth")
    with pytest.raises(EdgeDeeplabError, match=r"VainF key 'classifier\.aux_classifier\.0\.weight' has no place"):
        import_vainf(tmp_path / "aux.pth")

    state = _vainf_state(reference)
    del state["classifier.aspp.convs.2.1.running_var"]
    torch.save({"model_state": state}, tmp_path / "short.pth")
    with pytest.raises(EdgeDeeplabError, match=r"needs 'aspp\.branches\.2\.1\.running_var'"):
        import_vainf(tmp_path / "short.pth")


def test_vainf_variants_and_options_that_cannot_import(tmp_path, capsys):
    reference = _reference("mobilenetv2")
    src = _vainf_file(tmp_path / "m.pth", reference)

    with pytest.raises(EdgeDeeplabError, match="holds a mobilenetv2 model, not resnet101"):
        import_vainf(src, backbone="resnet101")
    with pytest.raises(EdgeDeeplabError, match="predicts 21 classes but cityscapes has 19"):
        import_vainf(src, dataset="cityscapes")

    separable = _vainf_state(reference)
    separable["classifier.classifier.0.body.0.weight"] = separable.pop("classifier.classifier.0.weight")
    torch.save({"model_state": separable}, tmp_path / "sep.pth")
    with pytest.raises(EdgeDeeplabError, match="separable_conv"):
        import_vainf(tmp_path / "sep.pth")

    v3 = {k: v for k, v in _vainf_state(reference).items() if not k.startswith("classifier.")}
    v3["classifier.classifier.0.convs.0.0.weight"] = torch.zeros(256, 320, 1, 1)
    torch.save({"model_state": v3}, tmp_path / "v3.pth")
    with pytest.raises(EdgeDeeplabError, match="DeepLabV3 \\(no decoder\\)"):
        import_vainf(tmp_path / "v3.pth")

    torch.save(_vainf_state(reference), tmp_path / "bare.pth")
    with pytest.raises(EdgeDeeplabError, match="no 'model_state'"):
        import_vainf(tmp_path / "bare.pth")

    out = tmp_path / "ours.pt"
    out.write_bytes(b"keep me")
    assert main(["import-checkpoint", str(src), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err and out.read_bytes() == b"keep me"


def test_vainf_classes_from_a_classes_yaml(tmp_path):
    reference = _reference("mobilenetv2", num_classes=3)
    src = _vainf_file(tmp_path / "mine.pth", reference)
    with pytest.raises(EdgeDeeplabError, match="neither VOC \\(21\\) nor Cityscapes \\(19\\)"):
        import_vainf(src)
    (tmp_path / "classes.yaml").write_text("classes: [background, weed, crop]\n")
    ckpt = import_vainf(src, dataset=str(tmp_path / "classes.yaml"))
    assert ckpt.classes == ["background", "weed", "crop"]


def test_output_stride_from_vainf_file_names(tmp_path):
    assert output_stride_from_name(tmp_path / "best_deeplabv3plus_mobilenet_voc_os16.pth") == 16
    assert output_stride_from_name(tmp_path / "best_deeplabv3plus_resnet101_cityscapes_os8.pth") == 8
    assert output_stride_from_name(tmp_path / "model.pth") is None


def test_vainf_files_from_older_numpy_and_torch_load(tmp_path):
    """VainF's published files were saved under numpy 1.x, which names its scalar type
    ``numpy.core.multiarray.scalar`` (numpy 2 writes ``numpy._core``): both must load."""
    reference = _reference("mobilenetv2")
    new = _vainf_file(tmp_path / "new.pth", reference)
    old = tmp_path / "best_deeplabv3plus_mobilenet_voc_os16.pth"
    with zipfile.ZipFile(new) as zin, zipfile.ZipFile(old, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("data.pkl"):
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            zout.writestr(info, data)
    assert "numpy.core.multiarray.scalar" in torch.serialization.get_unsafe_globals_in_checkpoint(old)
    assert import_vainf(old).metrics["reported_miou"] == pytest.approx(0.7215)
    # Files from PyTorch < 1.6 use the legacy (non-zip) format.
    legacy = tmp_path / "legacy_os16.pth"
    torch.save(torch.load(new, weights_only=False), legacy, _use_new_zipfile_serialization=False)
    assert import_vainf(legacy).metrics["reported_miou"] == pytest.approx(0.7215)
