"""Weights trained elsewhere: torchvision ImageNet backbones, and VainF/DeepLabV3Plus-Pytorch models.

Both are read from local files (nothing is downloaded) by :func:`edge_deeplab.torch_files.load_torch_file`
(checked to be torch files first, then ``torch.load(weights_only=True)``, so no pickled code runs),
and loaded strictly: every tensor must find its place and every place must
get a tensor, or the error names the first key that does not fit.

**Backbones.** :func:`load_backbone_weights` takes a torchvision state dict (``mobilenet_v2``,
``resnet50``, ``resnet101``; e.g. ``mobilenet_v2-b0353104.pth``). Our backbones use torchvision's
module names, so keys map one to one once the ImageNet-only parts are dropped: ``classifier.*``
and ``features.18.*`` (the 1x1 conv to 1280 channels, which DeepLab does not use) for MobileNetV2,
``fc.*`` for ResNet. Files saved before PyTorch 0.4.1 lack BatchNorm's ``num_batches_tracked``;
it only counts training steps, so it is filled with zero.

**VainF/DeepLabV3Plus-Pytorch checkpoints** (``best_deeplabv3plus_mobilenet_voc_os16.pth``,
``..._resnet50_...``, ``..._resnet101_...``): a dict whose ``model_state`` is the state dict of
their ``DeepLabV3(backbone=IntermediateLayerGetter(...), classifier=DeepLabHeadV3Plus(...))``
(``network/modeling.py``, ``network/_deeplab.py``). Their key layout, from that source, and ours:

===========================================  ==============================  ===================
VainF key prefix                             ours                            module
===========================================  ==============================  ===================
``backbone.low_level_features.{0-3}.``       ``backbone.features.{0-3}.``    MobileNetV2 stem..s4
``backbone.high_level_features.{4-17}.``     ``backbone.features.{4-17}.``   MobileNetV2 rest
``backbone.{conv1,bn1,layer1-4}.``           same                            ResNet
``classifier.project.{0,1}.``                ``decoder.reduce.{0,1}.``       low-level 1x1 -> 48
``classifier.aspp.convs.{0-3}.{0,1}.``       ``aspp.branches.{0-3}.{0,1}.``  1x1 and atrous 3x3
``classifier.aspp.convs.4.{1,2}.``           ``aspp.branches.4.conv.{0,1}.`` image pooling
``classifier.aspp.project.{0,1}.``           ``aspp.project.0.{0,1}.``       ASPP projection
``classifier.classifier.{0,1}.``             ``decoder.convs.0.{0,1}.``      the one 3x3 conv
``classifier.classifier.3.``                 ``classifier.``                 1x1 to classes
===========================================  ==============================  ===================

VainF builds the MobileNetV2 parts with ``backbone.features[:4]`` and ``features[4:-1]``;
slicing an ``nn.Sequential`` keeps the children's original names, which is why the high-level
indices start at 4, and ``features.18`` is absent as in ours. Their head has one 3x3 conv in the
decoder, hence ``decoder_convs=1``. Not importable, with an error saying so: their DeepLabV3
(no decoder: an extra 3x3 conv after ASPP that our DeepLabv3 lacks), ``--separable_conv`` models
(no BatchNorm between depthwise and pointwise conv, unlike ours) and HRNet backbones.

One difference is not in the weights: VainF's MobileNetV2 pads differently from torchvision's
(its first conv is unpadded; its inverted residuals pad their input before the expansion 1x1
conv rather than at the depthwise conv). Imported MobileNetV2 models are therefore built with
``padding="vainf"``, which does the same, so they compute what VainF's model computes; ResNet
models use torchvision's padding, as VainF's do.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from edge_deeplab.checkpoint import Checkpoint
from edge_deeplab.models.config import ModelConfig
from edge_deeplab.torch_files import load_torch_file
from runtime.errors import EdgeDeeplabError
from runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD

if TYPE_CHECKING:
    from torch import Tensor, nn

# Keys of a torchvision ImageNet state dict that our backbones deliberately do not have.
IMAGENET_ONLY = {
    "mobilenetv2": ("classifier.", "features.18."),
    "resnet50": ("fc.",),
    "resnet101": ("fc.",),
}

# ResNet depth from the number of bottlenecks in layer3.
_RESNET_BY_LAYER3 = {6: "resnet50", 23: "resnet101"}

# VainF head key prefix -> ours (DeepLabHeadV3Plus, non-separable). Prefixes end in "." so that
# "classifier.classifier.3." never matches "classifier.classifier.".
VAINF_HEAD = (
    ("classifier.project.", "decoder.reduce."),
    ("classifier.aspp.convs.0.", "aspp.branches.0."),
    ("classifier.aspp.convs.1.", "aspp.branches.1."),
    ("classifier.aspp.convs.2.", "aspp.branches.2."),
    ("classifier.aspp.convs.3.", "aspp.branches.3."),
    ("classifier.aspp.convs.4.1.", "aspp.branches.4.conv.0."),
    ("classifier.aspp.convs.4.2.", "aspp.branches.4.conv.1."),
    ("classifier.aspp.project.", "aspp.project.0."),
    ("classifier.classifier.0.", "decoder.convs.0.0."),
    ("classifier.classifier.1.", "decoder.convs.0.1."),
    ("classifier.classifier.3.", "classifier."),
)
VAINF_BACKBONE = {
    "mobilenetv2": (
        ("backbone.low_level_features.", "backbone.features."),
        ("backbone.high_level_features.", "backbone.features."),
    ),
    "resnet50": (("backbone.", "backbone."),),
    "resnet101": (("backbone.", "backbone."),),
}
VAINF_CLASSIFIER_KEY = "classifier.classifier.3.weight"
VAINF_REPO = "VainF/DeepLabV3Plus-Pytorch"

def _tensor_dict(data: Any, path: Path) -> dict[str, "Tensor"]:
    """A ``{name: tensor}`` dict, or an error saying what the file holds instead."""
    import torch

    if not isinstance(data, Mapping) or not data:
        raise EdgeDeeplabError(f"{path} does not hold a state dict (found {type(data).__name__})")
    bad = next((k for k, v in data.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise EdgeDeeplabError(f"{path}: entry {bad!r} is not a tensor; expected a state dict of tensors")
    # nn.DataParallel / DistributedDataParallel save every key under "module.".
    if all(k.startswith("module.") for k in data):
        return {k[len("module."):]: v for k, v in data.items()}
    return dict(data)


def torchvision_architecture(keys: set[str]) -> str | None:
    """Which torchvision ImageNet model a state dict's keys belong to (our backbone names)."""
    if "features.0.0.weight" in keys and "features.1.conv.0.0.weight" in keys:
        return "mobilenetv2"
    if "conv1.weight" in keys and "layer1.0.conv3.weight" in keys:
        layer3 = {int(k.split(".")[1]) for k in keys if k.startswith("layer3.")}
        return _RESNET_BY_LAYER3.get(len(layer3), f"a ResNet with {len(layer3)} blocks in layer3")
    return None


def _fill_num_batches_tracked(state: dict[str, "Tensor"], expected: Mapping[str, "Tensor"]) -> None:
    """Add the BatchNorm step counters that pre-0.4.1 files lack (they do not affect outputs)."""
    import torch

    for key in expected:
        if key.endswith(".num_batches_tracked") and key not in state:
            if f"{key[: -len('num_batches_tracked')]}running_mean" in state:
                state[key] = torch.zeros((), dtype=torch.long)


def check_fits(state: Mapping[str, "Tensor"], module: "nn.Module", what: str, source: str) -> None:
    """Fail with one line naming the first key that is missing, left over or of the wrong shape."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in state if k in expected and state[k].shape != expected[k].shape]
    if not (missing or unexpected or wrong):
        return
    counts = f"{len(missing)} missing, {len(unexpected)} without a place, {len(wrong)} of the wrong shape"
    if wrong:
        key = wrong[0]
        first = f"{key!r} is {tuple(state[key].shape)} in {source} but {tuple(expected[key].shape)} in {what}"
    elif unexpected:
        first = f"{unexpected[0]!r} from {source} has no place in {what}"
    else:
        first = f"{what} needs {missing[0]!r}, which {source} lacks"
    raise EdgeDeeplabError(f"{source} does not fit {what}: {first} ({counts})")


def load_backbone_weights(model: "nn.Module", path: str | Path) -> None:
    """Load torchvision ImageNet weights from ``path`` into ``model.backbone`` (strict).

    ``model`` is a :class:`~edge_deeplab.models.DeepLab`; its head keeps its initialisation.
    """
    path = Path(path)
    backbone_name = model.config.backbone
    if backbone_name not in IMAGENET_ONLY:
        raise EdgeDeeplabError(
            f"there are no torchvision ImageNet weights for {backbone_name}; "
            f"backbone weights can be loaded for {', '.join(IMAGENET_ONLY)}"
        )
    data = load_torch_file(path, "weights file")
    if isinstance(data, Mapping) and "model_state" in data:
        raise EdgeDeeplabError(
            f"{path} is a whole VainF/DeepLabV3Plus-Pytorch model, not backbone weights; "
            "convert it with 'edge-deeplab import-checkpoint'"
        )
    if isinstance(data, Mapping) and data.get("format") == "edge-deeplab-checkpoint":
        raise EdgeDeeplabError(f"{path} is an edge-deeplab checkpoint, not torchvision backbone weights")
    state = _tensor_dict(data, path)
    found = torchvision_architecture(set(state))
    if found is None:
        raise EdgeDeeplabError(
            f"{path} is not a torchvision mobilenet_v2/resnet50/resnet101 state dict "
            f"(first key {next(iter(state))!r})"
        )
    if found != backbone_name:
        raise EdgeDeeplabError(f"{path} holds {found} weights but the model's backbone is {backbone_name}")
    state = {k: v for k, v in state.items() if not k.startswith(IMAGENET_ONLY[backbone_name])}
    backbone = model.backbone
    _fill_num_batches_tracked(state, backbone.state_dict())
    check_fits(state, backbone, f"the {backbone_name} backbone (width {model.config.width_mult})", str(path))
    backbone.load_state_dict(state, strict=True)


def vainf_backbone(state: Mapping[str, "Tensor"]) -> str:
    """Our backbone name for a VainF state dict, or an error naming what it is instead."""
    keys = set(state)
    if any(k.startswith("backbone.low_level_features.") for k in keys):
        stem = state.get("backbone.low_level_features.0.0.weight")
        if stem is not None and stem.shape[0] != 32:
            raise EdgeDeeplabError(
                f"this VainF MobileNetV2 has {stem.shape[0]} stem channels; only width 1.0 (32) imports"
            )
        return "mobilenetv2"
    if "backbone.layer1.0.conv3.weight" in keys:
        layer3 = {int(k.split(".")[2]) for k in keys if k.startswith("backbone.layer3.")}
        if len(layer3) in _RESNET_BY_LAYER3:
            return _RESNET_BY_LAYER3[len(layer3)]
        raise EdgeDeeplabError(f"this VainF ResNet has {len(layer3)} blocks in layer3; resnet50 (6) and resnet101 (23) import")
    hint = "an HRNet backbone, which edge-deeplab does not have" if any("stage4" in k for k in keys) else "an unknown backbone"
    raise EdgeDeeplabError(f"the VainF checkpoint has {hint}; mobilenet, resnet50 and resnet101 import")


def vainf_key(key: str, backbone: str) -> str | None:
    """Our key for a VainF key, or None if it has no place (see the table in the module docstring)."""
    for theirs, ours in VAINF_BACKBONE[backbone] + VAINF_HEAD:
        if key.startswith(theirs):
            return ours + key[len(theirs):]
    return None


def _check_vainf_head(state: Mapping[str, "Tensor"]) -> None:
    """Refuse the VainF variants whose structure differs from ours, saying which."""
    if any(".body." in k for k in state):
        raise EdgeDeeplabError(
            "this VainF model was trained with --separable_conv (no BatchNorm between depthwise and "
            "pointwise conv), which edge-deeplab's separable convs do not reproduce; it cannot be imported"
        )
    if "classifier.project.0.weight" not in state:
        if any(k.startswith("classifier.classifier.0.convs.") for k in state):
            raise EdgeDeeplabError(
                "this is a VainF DeepLabV3 (no decoder): its head has a 3x3 conv after ASPP that "
                "edge-deeplab's DeepLabv3 lacks; import a deeplabv3plus_* checkpoint instead"
            )
        raise EdgeDeeplabError("the VainF checkpoint has no DeepLabV3+ head (classifier.project.* missing)")
    if VAINF_CLASSIFIER_KEY not in state:
        raise EdgeDeeplabError(f"the VainF checkpoint lacks {VAINF_CLASSIFIER_KEY}, the final classifier")


def output_stride_from_name(path: Path) -> int | None:
    """VainF names files ``..._os16.pth`` / ``..._os8.pth``; the stride they were trained at."""
    match = re.search(r"_os(8|16|32)(?=\D|$)", path.stem)
    return int(match.group(1)) if match else None


def label_set(dataset: str | None, num_classes: int) -> tuple[list[str], list[tuple[int, int, int]], str]:
    """Class names, palette and the dataset string to record, for a model with ``num_classes``.

    ``dataset`` is ``voc``, ``cityscapes``, a dataset directory (VOC, Cityscapes or a folder
    dataset: its path is recorded, so ``evaluate`` finds it), or a ``classes.yaml``. ``None``
    picks VOC for 21 classes and Cityscapes for 19, the two datasets VainF publishes models for.
    """
    from edge_deeplab.data import cityscapes, folder, voc

    known = {"voc": (voc.VOC_CLASSES, voc.VOC_PALETTE), "cityscapes": (cityscapes.CITYSCAPES_CLASSES, cityscapes.CITYSCAPES_PALETTE)}
    if dataset is None:
        by_count = {len(classes): name for name, (classes, _) in known.items()}
        if num_classes not in by_count:
            raise EdgeDeeplabError(
                f"the model predicts {num_classes} classes, neither VOC (21) nor Cityscapes (19); "
                "name its classes with --dataset (a dataset directory or a classes.yaml)"
            )
        dataset = by_count[num_classes]
    if dataset in known:
        classes, palette = known[dataset]
        recorded = dataset
    else:
        spec = Path(dataset)
        recorded = str(spec)
        if spec.is_file():
            meta = folder.read_classes_file(spec)
            classes, palette = meta["classes"], meta["palette"]
            recorded = str(spec.parent) if folder.detect(str(spec.parent)) else ""
        elif voc.detect(dataset):
            classes, palette = known["voc"]
        elif cityscapes.detect(dataset):
            classes, palette = known["cityscapes"]
        elif folder.detect(dataset):
            meta = folder.read_classes_file(spec / folder.CLASSES_FILE)
            classes, palette = meta["classes"], meta["palette"]
        else:
            raise EdgeDeeplabError(
                f"--dataset {dataset!r} is not voc, cityscapes, a dataset directory or a classes.yaml"
            )
    if len(classes) != num_classes:
        raise EdgeDeeplabError(
            f"the model predicts {num_classes} classes but {dataset} has {len(classes)}; "
            "give the dataset the model was trained on"
        )
    return list(classes), [tuple(c) for c in palette], recorded


def import_vainf(
    path: str | Path,
    dataset: str | None = None,
    backbone: str | None = None,
    output_stride: int | None = None,
) -> Checkpoint:
    """Convert a VainF/DeepLabV3Plus-Pytorch checkpoint into one of ours (not yet saved).

    The backbone and the number of classes are read from the weights; ``backbone``, when given,
    must agree. Class names come from ``dataset`` (see :func:`label_set`). ``output_stride``
    defaults to the ``_osN`` in the file name, else 16. The model is built and loaded strictly
    before the checkpoint is returned, so a returned checkpoint always loads.
    """
    from edge_deeplab.models import build_model

    path = Path(path)
    data = load_torch_file(path, "weights file")
    if not isinstance(data, Mapping) or "model_state" not in data:
        found = sorted(map(str, data))[:5] if isinstance(data, Mapping) else type(data).__name__
        raise EdgeDeeplabError(f"{path} is not a {VAINF_REPO} checkpoint (no 'model_state'; found {found})")
    state = _tensor_dict(data["model_state"], path)
    _check_vainf_head(state)
    found = vainf_backbone(state)
    if backbone is not None and backbone != found:
        raise EdgeDeeplabError(f"{path} holds a {found} model, not {backbone}")
    num_classes = int(state[VAINF_CLASSIFIER_KEY].shape[0])
    classes, palette, recorded = label_set(dataset, num_classes)
    if output_stride is None:
        output_stride = output_stride_from_name(path) or 16
    config = ModelConfig(
        backbone=found,
        num_classes=num_classes,
        output_stride=output_stride,
        decoder=True,
        separable=False,
        decoder_convs=1,
        aspp_dropout=0.1,
        padding="vainf" if found == "mobilenetv2" else "same",
    )
    ours: dict[str, Tensor] = {}
    for key, value in state.items():
        mapped = vainf_key(key, found)
        if mapped is None:
            raise EdgeDeeplabError(f"{path}: VainF key {key!r} has no place in an edge-deeplab {found} model")
        ours[mapped] = value
    model = build_model(config)
    _fill_num_batches_tracked(ours, model.state_dict())
    check_fits(ours, model, f"an edge-deeplab {found} DeepLabv3+ (VainF head)", str(path))
    model.load_state_dict(ours, strict=True)
    metrics: dict[str, Any] = {"imported_from": f"{VAINF_REPO}: {path.name}"}
    best = data.get("best_score")
    if isinstance(best, (int, float)) or hasattr(best, "item"):
        metrics["reported_miou"] = float(best)
    return Checkpoint(
        model_config=config,
        state_dict={k: v.detach().clone() for k, v in model.state_dict().items()},
        classes=list(classes),
        palette=[list(map(int, c)) for c in palette],
        mean=list(IMAGENET_MEAN),
        std=list(IMAGENET_STD),
        ignore_index=255,
        dataset=recorded,
        metrics=metrics,
        eval_input_size=_eval_size(dataset, recorded),
    )


def _eval_size(dataset: str | None, recorded: str) -> list[int] | None:
    """The usual evaluation size of the dataset named at import (VOC or Cityscapes), if any."""
    from edge_deeplab.data.base import usual_eval_size

    size = usual_eval_size(recorded) or (usual_eval_size(dataset) if dataset else None)
    return None if size is None else list(size)
