"""Two-level VQ-VAE-2 of Razavi et al. (2019), structured like rosinality/vq-vae-2-pytorch, which the
authors' code reuses (METHOD.md §4): a 256x256 image becomes a 32x32 top and a 64x64 bottom grid of codes."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..quantizers import QuantizerBase
from .blocks import Decoder, Encoder
from .vqvae import VAEOutput, check_input, check_quantizer, nearest_indices


class VQVAE2(nn.Module):
    """VQ-VAE-2 with one quantiser per level (each built with ``dim=embedding_dim``, ``channel_dim=1``).

    The bottom encoder downsamples by 4, the top encoder by 2 more. The quantised top latent is decoded
    (x2) and concatenated with the bottom encoding before the bottom quantiser; the image decoder takes the
    upsampled top codes concatenated with the bottom codes and upsamples by 4.
    """

    levels = ("top", "bottom")
    default_image_size = 256
    downsampling = 8  # the top level's; the bottom level is at 1/4

    def __init__(self, top_quantizer: nn.Module, bottom_quantizer: nn.Module, in_channels: int = 3,
                 hidden: int = 128, res_channels: int = 32, num_res_blocks: int = 2, embedding_dim: int = 64):
        super().__init__()
        self.in_channels, self.embedding_dim = in_channels, embedding_dim
        d = embedding_dim
        self.encoder_bottom = Encoder(in_channels, hidden, res_channels, num_res_blocks, stride=4)
        self.encoder_top = Encoder(hidden, hidden, res_channels, num_res_blocks, stride=2)
        self.pre_quantize_top = nn.Conv2d(hidden, d, 1)
        self.top_quantizer = check_quantizer(top_quantizer, d, "top_quantizer")
        self.decoder_top = Decoder(d, d, hidden, res_channels, num_res_blocks, stride=2)
        self.pre_quantize_bottom = nn.Conv2d(d + hidden, d, 1)
        self.bottom_quantizer = check_quantizer(bottom_quantizer, d, "bottom_quantizer")
        self.upsample_top = nn.ConvTranspose2d(d, d, 4, stride=2, padding=1)
        self.decoder = Decoder(2 * d, in_channels, hidden, res_channels, num_res_blocks, stride=4)

    @property
    def quantizers(self) -> dict[str, QuantizerBase]:
        """The quantiser of each latent level, keyed like ``levels``."""
        return {"top": self.top_quantizer, "bottom": self.bottom_quantizer}

    def latent_shapes(self, image_size: int) -> dict[str, tuple[int, int]]:
        """Latent (h, w) per level for a square input of side ``image_size``."""
        if image_size % self.downsampling:
            raise ValueError(f"VQVAE2: image_size must be a multiple of {self.downsampling}, got {image_size}")
        return {"top": (image_size // 8,) * 2, "bottom": (image_size // 4,) * 2}

    def _bottom_latent(self, enc_bottom: torch.Tensor, quant_top: torch.Tensor) -> torch.Tensor:
        return self.pre_quantize_bottom(torch.cat([self.decoder_top(quant_top), enc_bottom], dim=1))

    def _decode(self, quant_top: torch.Tensor, quant_bottom: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.cat([self.upsample_top(quant_top), quant_bottom], dim=1))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes of a (B, C, H, W) batch: ((B, H/8, W/8), (B, H/4, W/4)) int64. Never changes a codebook."""
        check_input(x, self.in_channels, self.downsampling, "VQVAE2")
        enc_bottom = self.encoder_bottom(x)
        top = nearest_indices(self.top_quantizer, self.pre_quantize_top(self.encoder_top(enc_bottom)))
        bottom_latent = self._bottom_latent(enc_bottom, self.top_quantizer.indices_to_codes(top))
        return top, nearest_indices(self.bottom_quantizer, bottom_latent)

    def decode_indices(self, indices: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Images (B, C, 8h, 8w) of (top (B, h, w), bottom (B, 2h, 2w)) codes."""
        top, bottom = indices
        return self._decode(self.top_quantizer.indices_to_codes(top), self.bottom_quantizer.indices_to_codes(bottom))

    def forward(self, x: torch.Tensor) -> VAEOutput:
        check_input(x, self.in_channels, self.downsampling, "VQVAE2")
        enc_bottom = self.encoder_bottom(x)
        q_top = self.top_quantizer(self.pre_quantize_top(self.encoder_top(enc_bottom)))
        q_bottom = self.bottom_quantizer(self._bottom_latent(enc_bottom, q_top.quantized))
        recon = self._decode(q_top.quantized, q_bottom.quantized)
        recon_loss = F.mse_loss(recon, x)
        vq_loss = q_top.loss + q_bottom.loss
        return VAEOutput(recon, recon_loss + vq_loss, recon_loss, vq_loss, (q_top.indices, q_bottom.indices),
                         {"top": q_top.perplexity, "bottom": q_bottom.perplexity})
