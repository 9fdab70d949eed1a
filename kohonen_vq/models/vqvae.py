"""VQ-VAE of van den Oord et al. (2017) in the CIFAR-10 configuration of the paper (METHOD.md §4)."""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..quantizers import QuantizerBase
from .blocks import Decoder, Encoder

Indices = torch.Tensor | tuple[torch.Tensor, ...]


class VAEOutput(NamedTuple):
    """What the VQ-VAE models return from ``forward``."""

    recon: torch.Tensor  # reconstruction, the input's shape
    total: torch.Tensor  # recon_loss + vq_loss, the training objective
    recon_loss: torch.Tensor  # per-element MSE between recon and input
    vq_loss: torch.Tensor  # sum of the quantisers' losses (commitment, plus codebook terms for gradient VQ)
    indices: Indices  # as returned by the model's ``encode``
    perplexity: dict[str, torch.Tensor]  # batch perplexity per latent level (``model.levels``)


def check_quantizer(quantizer: nn.Module, dim: int, role: str) -> QuantizerBase:
    """Checks that ``quantizer`` is a kohonen_vq quantiser of vectors of size ``dim`` in channel dim 1."""
    if not isinstance(quantizer, QuantizerBase):
        raise TypeError(f"{role} must be a kohonen_vq quantiser (KohonenVQ, EMAVQ, GradientVQ, GradientSOMVQ), "
                        f"got {type(quantizer).__name__}")
    if quantizer.dim != dim:
        raise ValueError(f"{role} quantises vectors of dim={quantizer.dim}, but the model's embedding_dim is {dim}")
    if quantizer.channel_dim not in (1, -3):
        raise ValueError(f"{role} has channel_dim={quantizer.channel_dim}; the model feeds it (B, D, H, W) latents, "
                         f"so build it with channel_dim=1")
    return quantizer


def nearest_indices(quantizer: QuantizerBase, z: torch.Tensor) -> torch.Tensor:
    """(B, H, W) codes of the (B, D, H, W) latent ``z``: the quantiser's assignment (Eq. 2), without its
    side effects (no codebook update, no step counted), so tokenising never changes a model."""
    rows = z.detach().movedim(1, -1).reshape(-1, z.shape[1])
    indices, _ = ops.assign(rows, quantizer.codebook)
    return indices.view(z.shape[0], *z.shape[2:])


def check_input(x: torch.Tensor, channels: int, factor: int, model: str) -> None:
    """Raises a clear error for a batch the model cannot reconstruct at its own size."""
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"{model}: expected a (B, {channels}, H, W) batch, got shape {tuple(x.shape)}")
    if x.shape[2] % factor or x.shape[3] % factor:
        raise ValueError(f"{model}: height and width must be multiples of {factor}, got {tuple(x.shape[2:])}")


class VQVAE(nn.Module):
    """Single-level VQ-VAE: a 32x32 image becomes an 8x8 grid of codes (the latent side is 1/4 of the input's).

    Encoder: conv4x4/s2 (in -> hidden/2), ReLU, conv4x4/s2 (-> hidden), ReLU, conv3x3, ``num_res_blocks``
    residual blocks, ReLU, conv1x1 to ``embedding_dim``. Decoder: conv3x3, residual blocks, ReLU,
    convT4x4/s2, ReLU, convT4x4/s2, no output activation. The residual blocks are bias-free and their skip
    carries relu(x), as in the zalando re-implementation the authors' code builds on (``ResidualBlock``).

    ``quantizer`` is any kohonen_vq quantiser built with ``dim=embedding_dim`` and ``channel_dim=1``.
    """

    levels = ("latent",)
    default_image_size = 32
    downsampling = 4

    def __init__(self, quantizer: nn.Module, in_channels: int = 3, hidden: int = 128, res_channels: int = 32,
                 num_res_blocks: int = 2, embedding_dim: int = 64):
        super().__init__()
        self.in_channels, self.embedding_dim = in_channels, embedding_dim
        self.encoder = Encoder(in_channels, hidden, res_channels, num_res_blocks, stride=4, res_bias=False,
                               relu_skip=True)
        self.pre_quantize = nn.Conv2d(hidden, embedding_dim, 1)
        self.quantizer = check_quantizer(quantizer, embedding_dim, "quantizer")
        self.decoder = Decoder(embedding_dim, in_channels, hidden, res_channels, num_res_blocks, stride=4,
                               res_bias=False, relu_skip=True)

    @property
    def quantizers(self) -> dict[str, QuantizerBase]:
        """The quantiser of each latent level, keyed like ``levels``."""
        return {"latent": self.quantizer}

    def latent_shapes(self, image_size: int) -> dict[str, tuple[int, int]]:
        """Latent (h, w) per level for a square input of side ``image_size``."""
        if image_size % self.downsampling:
            raise ValueError(f"VQVAE: image_size must be a multiple of {self.downsampling}, got {image_size}")
        side = image_size // self.downsampling
        return {"latent": (side, side)}

    def _latent(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels, self.downsampling, "VQVAE")
        return self.pre_quantize(self.encoder(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes of a (B, C, H, W) batch: (B, H/4, W/4) int64. Never changes the codebook."""
        return nearest_indices(self.quantizer, self._latent(x))

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Images (B, C, 4h, 4w) of a (B, h, w) grid of codes."""
        return self.decoder(self.quantizer.indices_to_codes(indices))

    def forward(self, x: torch.Tensor) -> VAEOutput:
        q = self.quantizer(self._latent(x))
        recon = self.decoder(q.quantized)
        recon_loss = F.mse_loss(recon, x)
        return VAEOutput(recon, recon_loss + q.loss, recon_loss, q.loss, q.indices, {"latent": q.perplexity})
