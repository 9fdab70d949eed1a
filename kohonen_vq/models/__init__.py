"""VQ-VAE models with a pluggable quantiser, their factory, and the codebook-grid decoding of Fig. 2.

    model = build_model("vqvae", "ksom")              # CIFAR-10 VQ-VAE, K = 512, 2D hard KSOM
    out = model(x)                                     # VAEOutput: recon, total, recon_loss, vq_loss, ...
    tokens = model.encode(x)                           # (B, 8, 8) int64 for 32x32 input
    images = model.decode_indices(tokens)
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..quantizers import EMAVQ, GradientSOMVQ, GradientVQ, KohonenVQ, QuantizerBase
from .blocks import Decoder, Encoder, ResidualBlock
from .vqvae import VAEOutput, VQVAE
from .vqvae2 import VQVAE2

QUANTIZERS: dict[str, type[QuantizerBase]] = {
    "ksom": KohonenVQ, "ema": EMAVQ, "gradient": GradientVQ, "gradient-som": GradientSOMVQ}
ARCHITECTURES: dict[str, type[nn.Module]] = {"vqvae": VQVAE, "vqvae2": VQVAE2}


def build_quantizer(name: str, num_codes: int = 512, dim: int = 64, **kwargs: Any) -> QuantizerBase:
    """A quantiser by name (``QUANTIZERS``) for (B, dim, H, W) latents; ``kwargs`` go to its constructor."""
    if name not in QUANTIZERS:
        raise ValueError(f"unknown quantizer {name!r}; choose one of {sorted(QUANTIZERS)}")
    return QUANTIZERS[name](num_codes, dim, channel_dim=1, **kwargs)


def build_model(arch: str = "vqvae", quantizer: str = "ksom", num_codes: int = 512, *, in_channels: int = 3,
                hidden: int = 128, res_channels: int = 32, num_res_blocks: int = 2, embedding_dim: int = 64,
                **quantizer_kwargs: Any) -> VQVAE | VQVAE2:
    """A VQ-VAE (``"vqvae"``) or VQ-VAE-2 (``"vqvae2"``, one quantiser per level, same settings) whose
    quantisers are ``build_quantizer(quantizer, num_codes, embedding_dim, **quantizer_kwargs)``."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    quantizers = [build_quantizer(quantizer, num_codes, embedding_dim, **quantizer_kwargs)
                  for _ in ARCHITECTURES[arch].levels]
    return ARCHITECTURES[arch](*quantizers, in_channels=in_channels, hidden=hidden, res_channels=res_channels,
                               num_res_blocks=num_res_blocks, embedding_dim=embedding_dim)


@torch.no_grad()
def decode_constant_codes(model: VQVAE | VQVAE2, level: str | None = None, other_code: int = 0,
                          image_size: int | None = None, batch_size: int = 64) -> torch.Tensor:
    """Decodes, for every code k of ``level``'s codebook, a latent whose positions all hold k (the paper's
    Fig. 2); the model's other level, if any, holds ``other_code`` everywhere (App. C.4).

    ``level`` defaults to the model's first (``"latent"`` for VQVAE, ``"top"`` for VQVAE2); ``image_size``
    to the model's training resolution. Returns (K, C, image_size, image_size); tile image k at
    ``quantizer.indices_to_coords(k)`` to draw the grid.
    """
    level = model.levels[0] if level is None else level
    if level not in model.levels:
        raise ValueError(f"level must be one of {model.levels}, got {level!r}")
    shapes = model.latent_shapes(model.default_image_size if image_size is None else image_size)
    for name, other in model.quantizers.items():
        if name != level and not 0 <= other_code < other.num_codes:
            raise ValueError(f"other_code must be in [0, {other.num_codes}) for level {name!r}, got {other_code}")
    quantizer = model.quantizers[level]
    device = quantizer.codebook.device
    images = []
    for codes in torch.arange(quantizer.num_codes, device=device).split(batch_size):
        indices = tuple(codes.view(-1, 1, 1).expand(-1, *shapes[name]) if name == level
                        else torch.full((len(codes), *shapes[name]), other_code, device=device)
                        for name in model.levels)
        images.append(model.decode_indices(indices[0] if len(indices) == 1 else indices))
    return torch.cat(images)


__all__ = ["ARCHITECTURES", "QUANTIZERS", "Decoder", "Encoder", "ResidualBlock", "VAEOutput", "VQVAE", "VQVAE2",
           "build_model", "build_quantizer", "decode_constant_codes"]
