"""DeepLabv3+ (and DeepLabv3 with the decoder off): the model, its builder and the stride switch.

Chen et al., "Encoder-Decoder with Atrous Separable Convolution for Semantic Image Segmentation",
ECCV 2018. Backbone -> ASPP -> decoder (low-level 1x1 to 48 channels, encoder output upsampled to
the low-level feature's exact size, concat, 3x3 convs of 256) -> 1x1 classifier -> bilinear
upsampling to the input size. Every resize targets an actual tensor's size, never a fixed factor,
so any input height and width works (97x131 as well as 512x512) and ONNX shapes stay dynamic.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_deeplab.models.aspp import ASPP, ASPP_CHANNELS, ASPP_RATES
from edge_deeplab.models.config import OUTPUT_STRIDES, ModelConfig
from edge_deeplab.models.layers import ConvBNReLU, SeparableConv2d, init_weights
from edge_deeplab.models.mobilenetv2 import MobileNetV2
from edge_deeplab.models.resnet import ResNet
from edge_deeplab.models.xception import Xception65
from runtime.errors import EdgeDeeplabError

LOW_LEVEL_REDUCED = 48


class Decoder(nn.Module):
    """DeepLabv3+ decoder: fuse the upsampled encoder output with reduced low-level features."""

    def __init__(self, low_level_channels: int, num_convs: int, separable: bool) -> None:
        super().__init__()
        self.reduce = ConvBNReLU(low_level_channels, LOW_LEVEL_REDUCED, 1)
        convs: list[nn.Module] = []
        in_channels = ASPP_CHANNELS + LOW_LEVEL_REDUCED
        for _ in range(num_convs):
            if separable:
                convs.append(SeparableConv2d(in_channels, ASPP_CHANNELS))
            else:
                convs.append(ConvBNReLU(in_channels, ASPP_CHANNELS, 3))
            in_channels = ASPP_CHANNELS
        self.convs = nn.Sequential(*convs)

    def forward(self, encoded: Tensor, low_level: Tensor) -> Tensor:
        # Upsample to the low-level feature's exact size (x4 nominally): with odd input sizes
        # the two strides' rounding differs, and a fixed factor would not concat.
        encoded = F.interpolate(
            encoded, size=low_level.shape[-2:], mode="bilinear", align_corners=False
        )
        return self.convs(torch.cat([self.reduce(low_level), encoded], dim=1))


def _make_backbone(config: ModelConfig) -> nn.Module:
    """The backbone named by the config, at the config's output stride."""
    if config.backbone == "mobilenetv2":
        return MobileNetV2(config.width_mult, config.output_stride, config.padding)
    if config.backbone in ("resnet50", "resnet101"):
        return ResNet(config.backbone, config.output_stride)
    return Xception65(config.output_stride)


class DeepLab(nn.Module):
    """DeepLabv3+ (``config.decoder``) or DeepLabv3; ``forward`` returns logits (N, C, H, W).

    ``config`` always describes the model as it is now: :func:`set_output_stride` updates it.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = _make_backbone(config)
        self.aspp = ASPP(
            self.backbone.out_channels,
            ASPP_RATES[config.output_stride],
            separable=config.use_separable,
            dropout=config.aspp_dropout,
        )
        self.decoder: Decoder | None = None
        if config.decoder:
            self.decoder = Decoder(
                self.backbone.low_level_channels, config.decoder_convs, config.use_separable
            )
        self.classifier = nn.Conv2d(ASPP_CHANNELS, config.num_classes, 1)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        low_level, features = self.backbone(x)
        out = self.aspp(features)
        if self.decoder is not None:
            out = self.decoder(out, low_level)
        out = self.classifier(out)
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)


def build_model(config: ModelConfig) -> DeepLab:
    """Build a freshly initialised DeepLab for ``config`` (no pretrained weights)."""
    if not isinstance(config, ModelConfig):
        raise EdgeDeeplabError(f"build_model needs a ModelConfig, got {type(config).__name__}")
    return DeepLab(config)


def set_output_stride(model: DeepLab, output_stride: int) -> DeepLab:
    """Switch a built model to output stride 8, 16 or 32 in place, and return it.

    Backbone strides become dilations (or back) and the ASPP rates are rescaled; only conv
    ``stride``/``dilation``/``padding`` attributes change, so the state dict is the same at every
    stride: train at 16, then evaluate or export at 8.
    """
    if output_stride not in OUTPUT_STRIDES:
        raise EdgeDeeplabError(f"output stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}")
    model.backbone.set_output_stride(output_stride)
    model.aspp.set_rates(ASPP_RATES[output_stride])
    model.config = replace(model.config, output_stride=output_stride)
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not; BN running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters())
