"""Atrous Spatial Pyramid Pooling (DeepLabv3, kept unchanged in DeepLabv3+).

Five parallel 256-channel branches on the backbone's final feature: a 1x1 conv, three 3x3 atrous
convs (optionally atrous separable) and image pooling, each with BN + ReLU; concatenated and
projected by a 1x1 conv + BN + ReLU + dropout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_deeplab.models.layers import ConvBNReLU, SeparableConv2d, set_conv_dilation
from runtime.errors import EdgeDeeplabError

ASPP_CHANNELS = 256

#: Atrous rates per output stride: the paper's (6, 12, 18) at 16, doubled at 8, halved at 32.
ASPP_RATES: dict[int, tuple[int, int, int]] = {
    8: (12, 24, 36),
    16: (6, 12, 18),
    32: (3, 6, 9),
}


class ImagePooling(nn.Module):
    """Global average pool -> 1x1 conv -> BN -> ReLU -> bilinear upsample to the feature's size.

    Written with ``mean`` over H, W and ``interpolate(size=x.shape[-2:])`` rather than a fixed-size
    pooling kernel so the ONNX graph keeps height and width dynamic (exporters rely on it).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] < 2 and not isinstance(self.conv[1], nn.SyncBatchNorm):
            # BN over a 1x1 pooled map in training mode sees one value per channel; torch
            # refuses it with a cryptic message. Keep BN (the paper does) and say what to do.
            # SyncBatchNorm (multi-GPU) gathers statistics over all processes, so one image
            # per process is fine there.
            raise EdgeDeeplabError(
                "training needs a batch of at least 2 images (ASPP image pooling uses BatchNorm "
                "on a 1x1 map); use batch size >= 2 with drop_last, or call model.eval()"
            )
        pooled = self.conv(x.mean((2, 3), keepdim=True))
        return F.interpolate(pooled, size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """The five-branch pyramid; :meth:`set_rates` rescales the atrous rates in place."""

    def __init__(
        self,
        in_channels: int,
        rates: tuple[int, int, int],
        separable: bool = False,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        branches: list[nn.Module] = [ConvBNReLU(in_channels, ASPP_CHANNELS, 1)]
        for rate in rates:
            if separable:
                branches.append(SeparableConv2d(in_channels, ASPP_CHANNELS, dilation=rate))
            else:
                branches.append(ConvBNReLU(in_channels, ASPP_CHANNELS, 3, dilation=rate))
        branches.append(ImagePooling(in_channels, ASPP_CHANNELS))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(
            ConvBNReLU(len(branches) * ASPP_CHANNELS, ASPP_CHANNELS, 1),
            nn.Dropout(dropout),
        )
        self.rates = tuple(rates)

    def atrous_convs(self) -> list[nn.Conv2d]:
        """The 3x3 convs of the three atrous branches (depthwise ones when separable)."""
        convs = []
        for branch in self.branches[1:4]:
            convs.append(branch.depthwise[0] if isinstance(branch, SeparableConv2d) else branch[0])
        return convs

    def set_rates(self, rates: tuple[int, int, int]) -> None:
        """Change the atrous rates (dilation and padding only; the weights stay)."""
        for conv, rate in zip(self.atrous_convs(), rates, strict=True):
            set_conv_dilation(conv, rate)
        self.rates = tuple(rates)

    def forward(self, x: Tensor) -> Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))
