"""Convolutional building blocks shared by VQ-VAE and VQ-VAE-2 (METHOD.md §4)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResidualBlock(nn.Module):
    """``skip + conv1x1(relu(conv3x3(relu(x))))``.

    ``relu_skip=True`` makes the skip carry ``relu(x)`` instead of ``x``: that is what the zalando
    VQ-VAE (and the authors' code derived from it, which produced the paper's CIFAR-10 numbers) computes,
    because its first ReLU is in-place and overwrites the block input before the addition.
    """

    def __init__(self, channels: int, res_channels: int, bias: bool = True, relu_skip: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, res_channels, 3, padding=1, bias=bias)
        self.conv2 = nn.Conv2d(res_channels, channels, 1, bias=bias)
        self.relu_skip = relu_skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(x)
        return (h if self.relu_skip else x) + self.conv2(F.relu(self.conv1(h)))


def residual_stack(channels: int, res_channels: int, num_blocks: int, bias: bool, relu_skip: bool) -> list[nn.Module]:
    """``num_blocks`` residual blocks followed by a ReLU, as both reference implementations do."""
    blocks: list[nn.Module] = [ResidualBlock(channels, res_channels, bias, relu_skip) for _ in range(num_blocks)]
    return blocks + [nn.ReLU()]


class Encoder(nn.Sequential):
    """Downsamples by ``stride`` (2 or 4) with 4x4/s2 convs, then a 3x3 conv and a residual stack.

    stride 4: conv4x4/s2 (in -> hidden/2), ReLU, conv4x4/s2 (-> hidden), ReLU, conv3x3 (hidden -> hidden);
    stride 2: conv4x4/s2 (in -> hidden/2), ReLU, conv3x3 (-> hidden).
    """

    def __init__(self, in_channels: int, hidden: int, res_channels: int, num_res_blocks: int, stride: int,
                 res_bias: bool = True, relu_skip: bool = False):
        if stride == 4:
            layers: list[nn.Module] = [nn.Conv2d(in_channels, hidden // 2, 4, stride=2, padding=1), nn.ReLU(),
                                       nn.Conv2d(hidden // 2, hidden, 4, stride=2, padding=1), nn.ReLU(),
                                       nn.Conv2d(hidden, hidden, 3, padding=1)]
        elif stride == 2:
            layers = [nn.Conv2d(in_channels, hidden // 2, 4, stride=2, padding=1), nn.ReLU(),
                      nn.Conv2d(hidden // 2, hidden, 3, padding=1)]
        else:
            raise ValueError(f"Encoder: stride must be 2 or 4, got {stride}")
        super().__init__(*layers, *residual_stack(hidden, res_channels, num_res_blocks, res_bias, relu_skip))


class Decoder(nn.Sequential):
    """Mirror of :class:`Encoder`: conv3x3 (in -> hidden), residual stack, then upsampling by ``stride``
    with 4x4/s2 transposed convs (no output activation)."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int, res_channels: int, num_res_blocks: int,
                 stride: int, res_bias: bool = True, relu_skip: bool = False):
        layers: list[nn.Module] = [nn.Conv2d(in_channels, hidden, 3, padding=1),
                                   *residual_stack(hidden, res_channels, num_res_blocks, res_bias, relu_skip)]
        if stride == 4:
            layers += [nn.ConvTranspose2d(hidden, hidden // 2, 4, stride=2, padding=1), nn.ReLU(),
                       nn.ConvTranspose2d(hidden // 2, out_channels, 4, stride=2, padding=1)]
        elif stride == 2:
            layers += [nn.ConvTranspose2d(hidden, out_channels, 4, stride=2, padding=1)]
        else:
            raise ValueError(f"Decoder: stride must be 2 or 4, got {stride}")
        super().__init__(*layers)
