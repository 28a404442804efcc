"""Tests for edge_deeplab.models: config, backbones, parameter counts, output stride, ONNX export."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edge_deeplab.models.config import BACKBONES, ModelConfig
from runtime.errors import EdgeDeeplabError

torch = pytest.importorskip("torch")

from edge_deeplab.models import (  # noqa: E402 - after the torch skip guard
    build_model,
    count_parameters,
    set_output_stride,
)
from edge_deeplab.models.layers import SeparableConv2d  # noqa: E402

# ----------------------------------------------------------------------------------------------
# Parameter counts, derived by hand from the layouts (not measured from our code).
#
# Backbones (torchvision's published totals minus the parts DeepLab drops):
#   resnet50:     25,557,032 - fc (2048*1000 + 1000 = 2,049,000)                 = 23,508,032
#   resnet101:    44,549,160 - fc (2,049,000)                                    = 42,500,160
#   mobilenet_v2:  3,504,872 - classifier Linear(1280, 1000) (1,281,000)
#                            - features.18 (1x1 conv 320*1280 = 409,600 + BN 2*1280) = 1,811,712
#   xception65 (paper layout; SepConv(i, o) = dw 9i + BN 2i + pw i*o + BN 2o = 11i + i*o + 2o):
#     stem conv 3x3 3->32 + BN (928), conv 3x3 32->64 + BN (18,560)
#     entry1 Sep(64,128)+2 Sep(128,128)+skip 64*128+BN256        =     53,696
#     entry2 Sep(128,256)+2 Sep(256,256)+skip 128*256+BN512      =    205,696
#     entry3 Sep(256,728)+2 Sep(728,728)+skip 256*728+BN1456     =  1,457,360
#     middle 16 * 3 * Sep(728,728) (539,448)                      = 25,893,504
#     exit1  Sep(728,728)+Sep(728,1024)+Sep(1024,1024)+skip 728*1024+BN2048 = 3,104,384
#     exit2  Sep(1024,1536)+Sep(1536,1536)+Sep(1536,2048)         =  7,133,184
#     total                                                        = 37,867,312
#
# VainF/DeepLabV3Plus-Pytorch DeepLabHeadV3Plus, final feature C channels, low-level L, K classes
# (all convs bias-free + BN (2 params per channel) except the classifier):
#   project  L*48 + 96
#   ASPP     1x1: C*256 + 512; 3 atrous 3x3: 3 * (C*256*9 + 512); pooling: C*256 + 512;
#            projection 1280*256 + 512 = 328,192
#   head     3x3 304->256: 304*256*9 + 512 = 700,928; classifier 1x1 256->K + bias: 257*K
# mobilenetv2 (C=320, L=24, K=21): 1,248 + 2,706,432 + 700,928 + 5,397 = 3,414,005
#   -> total 1,811,712 + 3,414,005 = 5,225,717
# resnet (C=2048, L=256, K=21): 12,384 + 15,535,104 + 700,928 + 5,397 = 16,253,813
#   -> resnet50 39,761,845, resnet101 58,753,973, xception65 (non-separable) 54,121,125
# Paper decoder (decoder_convs=2) adds a 3x3 256->256 conv + BN: 589,824 + 512 = 590,336.
# xception65 paper model (separable ASPP and decoder, decoder_convs=2, K=21):
#   project 12,384; ASPP 524,800 + 3 * Sep(2048,256) (547,328) + 524,800 + 328,192 = 3,019,776;
#   decoder Sep(304,256) 81,680 + Sep(256,256) 68,864; classifier 5,397 -> head 3,188,101
#   -> total 37,867,312 + 3,188,101 = 41,055,413
# ----------------------------------------------------------------------------------------------
BACKBONE_PARAMS = {
    "mobilenetv2": 1_811_712,
    "resnet50": 23_508_032,
    "resnet101": 42_500_160,
    "xception65": 37_867_312,
}
VAINF_PARAMS_21 = {
    "mobilenetv2": 5_225_717,
    "resnet50": 39_761_845,
    "resnet101": 58_753_973,
    "xception65": 54_121_125,
}
SECOND_DECODER_CONV = 590_336
XCEPTION_PAPER_PARAMS_21 = 41_055_413


@pytest.fixture(autouse=True)
def _few_threads():
    """The test machine's cores are shared: keep torch to one thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _randomize_bn_statistics(model: torch.nn.Module, seed: int = 0) -> None:
    """Give BN non-trivial running stats and affine params, so eval outputs depend on all of them."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)


def _conv_geometry(model: torch.nn.Module) -> dict[str, tuple]:
    return {
        name: (m.stride, m.dilation, m.padding)
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Conv2d)
    }


# ---------------------------------------------------------------------------------- config


def test_config_import_does_not_import_torch():
    code = (
        "import sys\n"
        "from edge_deeplab.models.config import ModelConfig\n"
        "import edge_deeplab.models as m\n"
        "m.ModelConfig, m.BACKBONES\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_config_round_trip_and_default_head():
    config = ModelConfig("xception65", 19, output_stride=8, decoder_convs=1)
    data = config.to_dict()
    assert data["separable"] is True  # resolved on construction: a saved config says which head
    assert ModelConfig.from_dict(data) == config
    assert ModelConfig("resnet50", 19).use_separable is False
    assert ModelConfig("resnet50", 19, separable=True).use_separable is True
    assert ModelConfig("mobilenetv2", 2, width_mult=1).width_mult == 1.0
    # The head `train` defaults to is the one ModelConfig builds: one default, defined once.
    from edge_deeplab.config import make_config

    for backbone in ("mobilenetv2", "resnet50", "xception65"):
        trained = make_config({}, {"backbone": backbone})
        assert ModelConfig(backbone, 21).separable is trained.separable, backbone


def test_format_1_checkpoint_with_null_separable_keeps_its_dense_head(tmp_path):
    """Checkpoints written before the default was defined once stored separable: null for the
    dense MobileNetV2 head; they still load, as the head they hold."""
    from edge_deeplab.checkpoint import load_checkpoint

    dense = ModelConfig("mobilenetv2", 2, width_mult=0.35, separable=False)
    state = build_model(dense).state_dict()
    torch.save({"format": "edge-deeplab-checkpoint", "format_version": 1,
                "model_config": {**dense.to_dict(), "separable": None}, "state_dict": state,
                "classes": ["a", "b"], "palette": [[0, 0, 0], [1, 1, 1]], "mean": [0.5] * 3, "std": [0.5] * 3},
               tmp_path / "old.pt")
    ckpt = load_checkpoint(tmp_path / "old.pt")
    assert ckpt.model_config.separable is False
    ckpt.build_model()  # strict load: the dense head's tensors fit


@pytest.mark.parametrize(
    "data",
    [
        {"backbone": "mobilenetv2", "num_classes": 21, "outputstride": 8},
        {"backbone": "vgg16", "num_classes": 21},
        {"backbone": "mobilenetv2"},
        {"backbone": "mobilenetv2", "num_classes": 0},
        {"backbone": "mobilenetv2", "num_classes": True},
        {"backbone": "mobilenetv2", "num_classes": 21, "output_stride": 4},
        {"backbone": "mobilenetv2", "num_classes": 21, "decoder": "yes"},
        {"backbone": "mobilenetv2", "num_classes": 21, "separable": 1},
        {"backbone": "mobilenetv2", "num_classes": 21, "width_mult": 0},
        {"backbone": "resnet50", "num_classes": 21, "width_mult": 0.5},
        {"backbone": "mobilenetv2", "num_classes": 21, "decoder_convs": 3},
        {"backbone": "mobilenetv2", "num_classes": 21, "aspp_dropout": 1.0},
        ["mobilenetv2", 21],
    ],
)
def test_config_rejects_bad_input(data):
    with pytest.raises(EdgeDeeplabError):
        ModelConfig.from_dict(data)


def test_build_and_switch_reject_bad_arguments():
    with pytest.raises(EdgeDeeplabError):
        build_model({"backbone": "mobilenetv2", "num_classes": 2})
    model = build_model(ModelConfig("mobilenetv2", 2, width_mult=0.5))
    with pytest.raises(EdgeDeeplabError):
        set_output_stride(model, 4)


# ---------------------------------------------------------------------------------- counts


@pytest.mark.parametrize("backbone", BACKBONES)
def test_parameter_counts_match_vainf_and_paper_layouts(backbone):
    vainf = build_model(ModelConfig(backbone, 21, decoder_convs=1, separable=False))
    assert count_parameters(vainf.backbone) == BACKBONE_PARAMS[backbone]
    assert count_parameters(vainf) == VAINF_PARAMS_21[backbone]
    paper = build_model(ModelConfig(backbone, 21, decoder_convs=2, separable=False))
    assert count_parameters(paper) == VAINF_PARAMS_21[backbone] + SECOND_DECODER_CONV


def test_xception_paper_model_count():
    model = build_model(ModelConfig("xception65", 21))  # separable by default, two decoder convs
    assert count_parameters(model) == XCEPTION_PAPER_PARAMS_21


def test_deeplabv3_has_no_decoder():
    model = build_model(ModelConfig("mobilenetv2", 21, decoder=False, separable=False)).eval()
    assert model.decoder is None
    # backbone + dense ASPP for C=320 (2,706,432, see above) + classifier 257*21
    assert count_parameters(model) == 1_811_712 + 2_706_432 + 5_397
    with torch.no_grad():
        out = model(torch.randn(1, 3, 65, 65))
    assert out.shape == (1, 21, 65, 65)


def test_separable_option_replaces_atrous_and_decoder_convs():
    model = build_model(ModelConfig("mobilenetv2", 21, separable=True)).eval()
    assert all(isinstance(b, SeparableConv2d) for b in model.aspp.branches[1:4])
    assert all(isinstance(c, SeparableConv2d) for c in model.decoder.convs)
    # ASPP 3x3 branch C=320 separable: 320*11 + 320*256 + 512 = 85,952 (was 737,792);
    # decoder Sep(304,256) 81,680 (was 700,928) and Sep(256,256) 68,864 (was 590,336).
    dense = VAINF_PARAMS_21["mobilenetv2"] + SECOND_DECODER_CONV
    expected = dense - 3 * (737_792 - 85_952) - (700_928 - 81_680) - (590_336 - 68_864)
    assert count_parameters(model) == expected == 2_719_813
    assert model.aspp.atrous_convs()[0].groups == 320
    with torch.no_grad():
        assert model(torch.randn(1, 3, 65, 65)).shape == (1, 21, 65, 65)


# ------------------------------------------------------------------------ torchvision names


def test_mobilenetv2_uses_torchvision_names():
    state = build_model(ModelConfig("mobilenetv2", 21)).backbone.state_dict()
    # torchvision mobilenet_v2 has 314 keys: stem 6, features.1 12, features.2-17 16*18,
    # features.18 6, classifier 2; we drop the last two groups.
    assert len(state) == 306
    for key, shape in {
        "features.0.0.weight": (32, 3, 3, 3),
        "features.0.1.running_var": (32,),
        "features.1.conv.0.0.weight": (32, 1, 3, 3),
        "features.1.conv.1.weight": (16, 32, 1, 1),
        "features.1.conv.2.weight": (16,),
        "features.2.conv.0.0.weight": (96, 16, 1, 1),
        "features.2.conv.1.0.weight": (96, 1, 3, 3),
        "features.2.conv.2.weight": (24, 96, 1, 1),
        "features.17.conv.3.bias": (320,),
    }.items():
        assert tuple(state[key].shape) == shape, key
    assert not any(k.startswith("features.18") for k in state)


def test_resnet_uses_torchvision_names():
    state = build_model(ModelConfig("resnet50", 21)).backbone.state_dict()
    # torchvision resnet50: stem 6 + 16 bottlenecks * 18 + 4 downsamples * 6 + fc 2 = 320 keys.
    assert len(state) == 318
    for key, shape in {
        "conv1.weight": (64, 3, 7, 7),
        "bn1.num_batches_tracked": (),
        "layer1.0.conv1.weight": (64, 64, 1, 1),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "layer1.0.downsample.1.running_mean": (256,),
        "layer2.0.conv2.weight": (128, 128, 3, 3),
        "layer4.2.bn3.weight": (2048,),
    }.items():
        assert tuple(state[key].shape) == shape, key


def test_mobilenetv2_width_rounding_follows_torchvision():
    backbone = build_model(ModelConfig("mobilenetv2", 2, width_mult=0.5)).backbone
    # make_divisible(24 * 0.5 = 12) -> 16, make_divisible(320 * 0.5) -> 160
    assert (backbone.low_level_channels, backbone.out_channels) == (16, 160)


# ---------------------------------------------------------------------------- shapes/stride


@pytest.mark.parametrize("backbone", BACKBONES)
def test_any_input_size_gives_logits_at_input_size(backbone):
    width = 0.5 if backbone == "mobilenetv2" else 1.0
    # Sizes that are not multiples of any stride; the heavy backbones get a smaller one.
    size = (97, 131) if backbone == "mobilenetv2" else (67, 53)
    model = build_model(ModelConfig(backbone, 5, output_stride=16, width_mult=width)).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size))
    assert out.shape == (1, 5, *size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("backbone", BACKBONES)
def test_feature_strides(backbone):
    width = 0.5 if backbone == "mobilenetv2" else 1.0
    model = build_model(ModelConfig(backbone, 3, output_stride=32, width_mult=width)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for os_ in (32, 16, 8):
            set_output_stride(model, os_)
            low, high = model.backbone(x)
            assert low.shape[1:] == (model.backbone.low_level_channels, 16, 16)
            assert high.shape[1:] == (model.backbone.out_channels, 64 // os_, 64 // os_)


def _dilation(conv: torch.nn.Conv2d) -> tuple[int, int]:
    return conv.stride[0], conv.dilation[0]


def test_mobilenetv2_dilation_pattern_matches_vainf():
    backbone = build_model(ModelConfig("mobilenetv2", 2, output_stride=16)).backbone
    feats = backbone.features
    assert _dilation(feats[14].depthwise) == (1, 1)
    assert [_dilation(feats[i].depthwise) for i in (15, 16, 17)] == [(1, 2)] * 3
    assert _dilation(feats[7].depthwise) == (2, 1)
    backbone.set_output_stride(8)
    assert _dilation(feats[7].depthwise) == (1, 1)
    assert [_dilation(feats[i].depthwise)[1] for i in range(8, 15)] == [2] * 7
    assert _dilation(feats[14].depthwise) == (1, 2)
    assert [_dilation(feats[i].depthwise) for i in (15, 16, 17)] == [(1, 4)] * 3
    assert feats[15].depthwise.padding == (4, 4)


def test_resnet_dilation_pattern_matches_torchvision():
    backbone = build_model(ModelConfig("resnet50", 2, output_stride=8)).backbone
    assert _dilation(backbone.layer3[0].conv2) == (1, 1)
    assert backbone.layer3[0].downsample[0].stride == (1, 1)
    assert all(_dilation(b.conv2) == (1, 2) for b in backbone.layer3[1:])
    assert _dilation(backbone.layer4[0].conv2) == (1, 2)
    assert all(_dilation(b.conv2) == (1, 4) for b in backbone.layer4[1:])
    backbone.set_output_stride(16)
    assert _dilation(backbone.layer3[0].conv2) == (2, 1)
    assert backbone.layer3[0].downsample[0].stride == (2, 2)
    assert _dilation(backbone.layer4[0].conv2) == (1, 1)
    assert all(_dilation(b.conv2) == (1, 2) for b in backbone.layer4[1:])


def test_xception_dilation_pattern_matches_paper():
    backbone = build_model(ModelConfig("xception65", 2, output_stride=8)).backbone

    def rates(block):
        return [_dilation(u.depthwise[0]) for u in block.units]

    assert rates(backbone.entry_block3) == [(1, 1), (1, 1), (1, 1)]
    assert all(rates(b) == [(1, 2)] * 3 for b in backbone.middle)
    assert rates(backbone.exit_block1) == [(1, 2)] * 3
    assert rates(backbone.exit_block2) == [(1, 4)] * 3
    backbone.set_output_stride(16)
    assert rates(backbone.entry_block3)[2] == (2, 1)
    assert all(rates(b) == [(1, 1)] * 3 for b in backbone.middle)
    assert rates(backbone.exit_block1) == [(1, 1)] * 3
    assert backbone.exit_block1.skip[0].stride == (1, 1)
    assert rates(backbone.exit_block2) == [(1, 2)] * 3


@pytest.mark.parametrize("backbone", BACKBONES)
def test_switched_geometry_equals_fresh_build(backbone):
    """Every conv's stride/dilation/padding after switching equals a model built at that stride."""
    model = build_model(ModelConfig(backbone, 3, output_stride=16))
    for os_ in (8, 32, 16, 8):
        set_output_stride(model, os_)
        fresh = build_model(ModelConfig(backbone, 3, output_stride=os_))
        assert _conv_geometry(model) == _conv_geometry(fresh)
        assert model.aspp.rates == {8: (12, 24, 36), 16: (6, 12, 18), 32: (3, 6, 9)}[os_]
        assert model.config == fresh.config


def test_switched_outputs_equal_fresh_model_with_same_weights():
    config = ModelConfig("mobilenetv2", 4, output_stride=16, width_mult=0.5)
    model = build_model(config)
    _randomize_bn_statistics(model)
    model.eval()
    state = model.state_dict()
    x = torch.randn(1, 3, 97, 131, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        at16 = model(x)
        for os_ in (8, 32, 16):
            set_output_stride(model, os_)
            fresh = build_model(ModelConfig("mobilenetv2", 4, output_stride=os_, width_mult=0.5))
            fresh.load_state_dict(state)
            fresh.eval()
            torch.testing.assert_close(model(x), fresh(x), rtol=0, atol=0)
        torch.testing.assert_close(model(x), at16, rtol=0, atol=0)
        set_output_stride(model, 8)
        assert not torch.allclose(model(x), at16)


@pytest.mark.parametrize("backbone", ["resnet50", "xception65"])
def test_switched_outputs_equal_fresh_model_heavy_backbones(backbone):
    model = build_model(ModelConfig(backbone, 3, output_stride=8))
    _randomize_bn_statistics(model)
    model.eval()
    x = torch.randn(1, 3, 65, 65, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        at8 = model(x)
        set_output_stride(model, 16)
        fresh = build_model(ModelConfig(backbone, 3, output_stride=16))
        fresh.load_state_dict(model.state_dict())
        torch.testing.assert_close(model(x), fresh.eval()(x), rtol=0, atol=0)
        set_output_stride(model, 8)
        torch.testing.assert_close(model(x), at8, rtol=0, atol=0)


# ------------------------------------------------------------------------- training details


def test_batch_of_one_in_training_is_a_clear_error_and_eval_works():
    model = build_model(ModelConfig("mobilenetv2", 3, width_mult=0.5))
    model.train()
    with pytest.raises(EdgeDeeplabError, match="batch of at least 2"):
        model(torch.randn(1, 3, 65, 65))
    out = model(torch.randn(2, 3, 65, 65))
    out.mean().backward()
    assert model.classifier.weight.grad is not None
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 65, 65)).shape == (1, 3, 65, 65)


def test_weight_init():
    model = build_model(ModelConfig("mobilenetv2", 21))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    assert torch.all(model.classifier.bias == 0)
    # Kaiming normal, fan_in: std sqrt(2 / 1280) for the 1x1 ASPP projection (327,680 weights).
    weight = model.aspp.project[0][0].weight
    assert abs(weight.std().item() - (2 / 1280) ** 0.5) < 0.02 * (2 / 1280) ** 0.5
    assert model.aspp.project[1].p == pytest.approx(0.1)


# ----------------------------------------------------------------------------------- ONNX


def test_onnx_export_keeps_height_and_width_dynamic(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = build_model(ModelConfig("mobilenetv2", 3, width_mult=0.5)).eval()
    _randomize_bn_statistics(model)
    path = tmp_path / "deeplab.onnx"
    torch.onnx.export(
        model,
        (torch.randn(1, 3, 64, 64),),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {2: "height", 3: "width"}, "logits": {2: "height", 3: "width"}},
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for height, width in ((97, 131), (48, 80)):
        x = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(height))
        (onnx_out,) = session.run(None, {"input": x.numpy()})
        with torch.no_grad():
            expected = model(x).numpy()
        assert onnx_out.shape == (1, 3, height, width)
        # Only float32 rounding differs: compare relative to the logits' scale (~10 here).
        assert abs(onnx_out - expected).max() <= 1e-4 * max(1.0, abs(expected).max())


def test_vainf_padding_matches_its_definition():
    """padding="vainf" computes VainF's MobileNetV2: unpadded stem, block input padded before expansion.

    The expectation is written out with functional ops from VainF's description, independently of
    the module code: F.pad(x, d) -> 1x1 expand -> BN -> ReLU6 -> 3x3 depthwise (padding 0) -> ...
    """
    import torch.nn.functional as F

    model = build_model(ModelConfig("mobilenetv2", 3, output_stride=16, padding="vainf")).eval()
    _randomize_bn_statistics(model)
    backbone = model.backbone
    x = torch.randn(1, 3, 65, 65, generator=torch.Generator().manual_seed(0))

    def bn_act(seq, y, act=True):
        y = F.batch_norm(y, seq.running_mean, seq.running_var, seq.weight, seq.bias, False, 0.0, seq.eps)
        return F.relu6(y) if act else y

    stem = backbone.features[0]
    y = bn_act(stem[1], F.conv2d(x, stem[0].weight, stride=2))  # no padding: 65 -> 32
    assert y.shape[-1] == 32
    block = backbone.features[2]  # expand 6, stride 2
    d = 1
    expand, dw, project, bn = block.conv[0], block.conv[1], block.conv[2], block.conv[3]
    # features[1] (expand ratio 1) pads its input, then depthwise with padding 0.
    z = bn_act(backbone.features[1].conv[0][1], F.conv2d(F.pad(y, (d,) * 4), backbone.features[1].conv[0][0].weight, groups=32))
    z = bn_act(backbone.features[1].conv[2], F.conv2d(z, backbone.features[1].conv[1].weight), act=False)
    h = bn_act(expand[1], F.conv2d(F.pad(z, (d,) * 4), expand[0].weight))
    h = bn_act(dw[1], F.conv2d(h, dw[0].weight, stride=2, groups=dw[0].groups))
    expected = bn_act(bn, F.conv2d(h, project.weight), act=False)
    with torch.no_grad():
        out = backbone.features[2](backbone.features[1](backbone.features[0](x)))
    assert torch.allclose(out, expected, atol=1e-5)
    # VainF's size arithmetic for a 513x513 input at OS 16: 513 -> 256 -> 128 -> 64 -> 32.
    with torch.no_grad():
        low, high = backbone(torch.zeros(1, 3, 513, 513))
    assert low.shape[-2:] == (128, 128) and high.shape[-2:] == (32, 32)
    with pytest.raises(EdgeDeeplabError, match="mobilenetv2 only"):
        ModelConfig("resnet50", 3, padding="vainf")
