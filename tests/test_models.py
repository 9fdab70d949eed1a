"""VQ-VAE and VQ-VAE-2: shapes, tokenise/decode round trip, straight-through gradients, every quantiser,
a few optimisation steps, and the constant-code decoding of Fig. 2."""
from __future__ import annotations

import pytest
import torch

from kohonen_vq import EMAVQ, GradientVQ, KohonenVQ
from kohonen_vq.models import QUANTIZERS, VQVAE, VQVAE2, build_model, decode_constant_codes

TINY = dict(hidden=16, res_channels=8, embedding_dim=8)  # same structure, small widths, for speed


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_vqvae_cifar_shapes() -> None:
    model = build_model("vqvae", "ksom")
    out = model(torch.randn(2, 3, 32, 32))
    assert out.recon.shape == (2, 3, 32, 32)
    assert out.indices.shape == (2, 8, 8) and out.indices.dtype == torch.int64
    assert model.pre_quantize.out_channels == 64 and model.quantizer.num_codes == 512
    assert set(out.perplexity) == {"latent"}
    torch.testing.assert_close(out.total, out.recon_loss + out.vq_loss)


def test_vqvae_layers_match_method() -> None:
    model = build_model("vqvae", "ema")
    convs = [m for m in model.encoder if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (3, 64, (4, 4), (2, 2)), (64, 128, (4, 4), (2, 2)), (128, 128, (3, 3), (1, 1))]
    block = model.encoder[5]
    assert (block.conv1.in_channels, block.conv1.out_channels, block.conv1.bias) == (128, 32, None)
    assert (block.conv2.kernel_size, block.conv2.out_channels, block.conv2.bias) == ((1, 1), 128, None)


def test_vqvae2_shapes_at_64() -> None:
    model = build_model("vqvae2", "ksom")
    out = model(torch.randn(2, 3, 64, 64))
    top, bottom = out.indices
    assert out.recon.shape == (2, 3, 64, 64)
    assert top.shape == (2, 8, 8) and bottom.shape == (2, 16, 16)
    assert set(out.perplexity) == {"top", "bottom"}
    torch.testing.assert_close(out.vq_loss, out.total - out.recon_loss)


def test_vqvae2_latents_at_256() -> None:
    model = build_model("vqvae2", "ema", num_codes=16, **TINY)
    assert model.latent_shapes(256) == {"top": (32, 32), "bottom": (64, 64)}
    top, bottom = model.encode(torch.randn(1, 3, 256, 256))
    assert top.shape == (1, 32, 32) and bottom.shape == (1, 64, 64)


@pytest.mark.parametrize("arch,size", [("vqvae", 32), ("vqvae2", 64)])
def test_encode_decode_round_trip(arch: str, size: int) -> None:
    model = build_model(arch, "ksom", num_codes=32, **TINY)
    x = torch.randn(3, 3, size, size)
    model.train()
    model(x)  # move the codebook off its initial state
    model.eval()
    out = model(x)
    indices = model.encode(x)
    if arch == "vqvae":
        assert torch.equal(indices, out.indices)
    else:
        assert all(torch.equal(a, b) for a, b in zip(indices, out.indices))
    torch.testing.assert_close(model.decode_indices(indices), out.recon, atol=1e-5, rtol=1e-5)


def test_encode_never_updates_the_codebook() -> None:
    model = build_model("vqvae2", "ksom", num_codes=16, **TINY).train()
    before = {name: q.codebook.clone() for name, q in model.quantizers.items()}
    model.encode(torch.randn(2, 3, 32, 32))
    for name, q in model.quantizers.items():
        assert q.step == 0 and torch.equal(q.codebook, before[name])


@pytest.mark.parametrize("arch,size", [("vqvae", 32), ("vqvae2", 32)])
@pytest.mark.parametrize("quantizer", sorted(QUANTIZERS))
def test_every_quantizer_plugs_in_and_gradients_pass_straight_through(arch: str, size: int, quantizer: str) -> None:
    model = build_model(arch, quantizer, num_codes=16, **TINY).train()
    out = model(torch.randn(2, 3, size, size))
    assert torch.isfinite(out.total) and out.vq_loss > 0
    out.recon_loss.backward()  # the decoder loss reaches the encoder only through the straight-through estimator
    first_conv = model.encoder[0] if arch == "vqvae" else model.encoder_bottom[0]
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0
    assert all(q.step == 1 for q in model.quantizers.values())


def test_gradient_quantizer_codebook_learns_from_vq_loss() -> None:
    model = build_model("vqvae", "gradient", num_codes=16, **TINY).train()
    model(torch.randn(2, 3, 32, 32)).vq_loss.backward()
    assert model.quantizer.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("arch,quantizer", [("vqvae", "ksom"), ("vqvae", "gradient"), ("vqvae2", "ema")])
def test_a_few_steps_lower_the_reconstruction_loss(arch: str, quantizer: str) -> None:
    model = build_model(arch, quantizer, num_codes=32, hidden=32, res_channels=16, embedding_dim=16)
    ramp = torch.linspace(-1, 1, 16)
    x = torch.stack([torch.stack([ramp.view(1, -1) * a + ramp.view(-1, 1) * b + c for a, b, c in
                                  torch.randn(3, 3).tolist()]) for _ in range(4)])  # smooth colour ramps
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        out = model(x)
        opt.zero_grad()
        out.total.backward()
        opt.step()
        losses.append(out.recon_loss.item())
    assert min(losses[-5:]) < 0.75 * losses[0]


def test_quantizer_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError, match="embedding_dim is 64"):
        VQVAE(KohonenVQ(16, 32, channel_dim=1))
    with pytest.raises(ValueError, match="channel_dim=1"):
        VQVAE(EMAVQ(16, 64))
    with pytest.raises(ValueError, match="bottom_quantizer"):
        VQVAE2(GradientVQ(16, 64, channel_dim=1), GradientVQ(16, 8, channel_dim=1))
    with pytest.raises(TypeError, match="kohonen_vq quantiser"):
        VQVAE(torch.nn.Identity())


def test_bad_names_and_sizes_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown arch"):
        build_model("vqgan", "ksom")
    with pytest.raises(ValueError, match="unknown quantizer"):
        build_model("vqvae", "kmeans")
    with pytest.raises(ValueError, match="multiples of 8"):
        build_model("vqvae2", "ema", num_codes=8, **TINY)(torch.randn(1, 3, 36, 36))


def test_decode_constant_codes_vqvae() -> None:
    model = build_model("vqvae", "ksom", num_codes=16, **TINY)
    images = decode_constant_codes(model, batch_size=5)
    assert images.shape == (16, 3, 32, 32)
    torch.testing.assert_close(images[7:8], model.decode_indices(torch.full((1, 8, 8), 7)))


@pytest.mark.parametrize("level", ["top", "bottom"])
def test_decode_constant_codes_vqvae2(level: str) -> None:
    model = build_model("vqvae2", "ksom", num_codes=8, **TINY)
    images = decode_constant_codes(model, level=level, other_code=3, image_size=32)
    assert images.shape == (8, 3, 32, 32)
    top = torch.full((1, 4, 4), 5 if level == "top" else 3)
    bottom = torch.full((1, 8, 8), 5 if level == "bottom" else 3)
    torch.testing.assert_close(images[5:6], model.decode_indices((top, bottom)))
    with pytest.raises(ValueError, match="level must be"):
        decode_constant_codes(model, level="latent")
