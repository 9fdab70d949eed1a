"""The nn.Module quantisers (KohonenVQ, EMAVQ, GradientVQ, GradientSOMVQ): training dynamics against
kohonen_vq.reference, the output contract, state handling, low precision, torch.compile, validation."""
from __future__ import annotations

import copy
import math
import shutil
import zlib

import pytest
import torch

import kohonen_vq
from kohonen_vq import EMAVQ, GradientSOMVQ, GradientVQ, KohonenVQ, metrics
from kohonen_vq import reference as ref

NATIVE = [KohonenVQ, EMAVQ]
ALL = [KohonenVQ, EMAVQ, GradientVQ, GradientSOMVQ]
STATE = ("codebook", "ema_sums", "ema_counts", "_step", "skipped_batches")


pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(shape: tuple[int, ...], g: torch.Generator, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=g).to(dtype)


def input_shape(channel_dim: int, dim: int) -> tuple[int, ...]:
    return (4, dim, 5, 5) if channel_dim == 1 else (3, 7, dim)


def rows_of(z: torch.Tensor, channel_dim: int) -> torch.Tensor:
    return z.movedim(channel_dim, -1).reshape(-1, z.shape[channel_dim])


def buffers(vq: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: b.clone() for name, b in vq.named_buffers()}


def assert_buffers_equal(vq: torch.nn.Module, before: dict[str, torch.Tensor], skip: tuple[str, ...] = ()) -> None:
    for name, b in vq.named_buffers():
        if name not in skip:
            assert torch.equal(b, before[name]), f"buffer {name} changed"


def assert_rel_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5) -> None:
    """Within rtol of the matrix's scale (entries near 0 legitimately carry cancellation error)."""
    scale = expected.abs().max().clamp_min(1e-30)
    err = (actual - expected).abs().max()
    assert err <= rtol * scale, f"max error {err.item():.3g} > {rtol} x scale {scale.item():.3g}"


# --- 1. training dynamics = the reference equations --------------------------------------------------
@pytest.mark.parametrize("neighbourhood", ["none", "hard", "gaussian", "exponential"])
@pytest.mark.parametrize("grid", [(16,), (4, 4)], ids=["1d", "2d"])
@pytest.mark.parametrize("init_count", [0.0, 1.0])
@pytest.mark.parametrize("update_empty", [True, False], ids=["update0", "no-update0"])
@pytest.mark.parametrize("channel_dim", [1, -1])
def test_training_matches_reference(neighbourhood: str, grid: tuple[int, ...], init_count: float,
                                    update_empty: bool, channel_dim: int, device: torch.device) -> None:
    # Non-default hyper-parameters so that a module ignoring one of them cannot pass.
    hyper = dict(shrink=0.3, sigma=1.5, base=4.0, decay=0.9, eps=1e-3, update_empty=update_empty)
    dim, steps = 6, 22
    g = gen(zlib.crc32(repr((neighbourhood, grid, init_count, update_empty, channel_dim)).encode()))
    vq = KohonenVQ(16, dim, grid=grid, neighbourhood=neighbourhood, init_count=init_count, channel_dim=channel_dim,
                   **hyper).to(device)
    w0 = torch.randn(16, dim, generator=g)
    vq.init_codebook(w0.to(device))
    w, m, n = w0.clone(), w0.clone(), torch.full((16,), init_count)
    for t in range(steps):
        z = batch(input_shape(channel_dim, dim), g) * 1.5 + 0.5  # offset: data and codebook not co-centred
        out = vq(z.to(device))
        x = rows_of(z, channel_dim)
        idx, _ = ref.assign(x, w)
        assert torch.equal(out.indices.flatten().cpu(), idx), f"indices differ at step {t}"
        sums, counts = ref.cluster_stats(x, idx, 16)
        w, m, n = ref.som_update(w, m, n, sums, counts, grid=grid, neighbourhood=neighbourhood, step=t, **hyper)
        assert_rel_close(vq.codebook.cpu(), w)
        assert_rel_close(vq.ema_sums.cpu(), m)
        assert_rel_close(vq.ema_counts.cpu(), n)
    assert vq.step == steps and int(vq.skipped_batches) == 0
    assert not torch.allclose(vq.codebook.cpu(), w0)  # the run did move the codebook


@pytest.mark.parametrize("init_count", [0.0, 1.0])
@pytest.mark.parametrize("update_empty", [True, False])
def test_emavq_is_kohonen_without_neighbours_bit_for_bit(init_count: float, update_empty: bool,
                                                         device: torch.device) -> None:
    kw = dict(decay=0.95, init_count=init_count, update_empty=update_empty, channel_dim=1)
    ema, som = EMAVQ(32, 8, **kw).to(device), KohonenVQ(32, 8, neighbourhood="none", **kw).to(device)
    som.init_codebook(ema.codebook.clone())
    g = gen(3)
    for _ in range(20):
        z = batch((4, 8, 5, 5), g).to(device)
        a, b = ema(z), som(z)
        for x, y in zip(a, b):
            assert torch.equal(x, y)
    for name in STATE:
        assert torch.equal(getattr(ema, name), getattr(som, name)), name


# --- 2. output contract ---------------------------------------------------------------------------
@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("channel_dim", [1, -1])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_output_contract(cls: type, channel_dim: int, training: bool, device: torch.device) -> None:
    torch.manual_seed(0)
    vq = cls(16, 6, grid=(4, 4), commitment=0.37, channel_dim=channel_dim).train(training).to(device)
    z = batch(input_shape(channel_dim, 6), gen(1)).to(device).requires_grad_()
    before = vq.codebook.clone()
    out = vq(z)
    quantized, indices, loss = out[:3]
    assert isinstance(out, kohonen_vq.VQOutput) and out.quantized is quantized
    assert quantized.shape == z.shape and quantized.dtype == z.dtype
    expected_index_shape = list(z.shape)
    del expected_index_shape[channel_dim]
    assert indices.dtype == torch.int64 and list(indices.shape) == expected_index_shape

    x = rows_of(z.detach(), channel_dim)
    idx_want, _ = ref.assign(x, before)
    assert torch.equal(indices.flatten().cpu(), idx_want.cpu())
    # the output holds the codes of the codebook as it was before this step's update
    codes = before[indices]
    codes = codes if channel_dim == -1 else codes.movedim(-1, channel_dim)
    assert torch.equal(quantized.detach(), codes)

    sq = ((before[idx_want] - x) ** 2).mean()
    want = (1 + 0.37) * sq if cls in (GradientVQ,) else 0.37 * sq
    if cls is not GradientSOMVQ:  # its extra neighbour term is checked in its own test
        torch.testing.assert_close(loss, want, rtol=1e-5, atol=0)

    # straight-through estimator: d quantized / d z is the identity
    upstream = torch.randn(z.shape, generator=gen(2)).to(device)
    (grad,) = torch.autograd.grad(quantized, z, upstream)
    assert torch.equal(grad, upstream)


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_commitment_gradient_is_the_mse_gradient(cls: type, dtype: torch.dtype, device: torch.device) -> None:
    # The commitment loss comes from assign's squared distances with a hand-written backward: it must equal
    # autograd's gradient of beta * mse(z, sg(w)), which is 2 beta (z - w) / (N D).
    torch.manual_seed(0)
    vq = cls(16, 6, commitment=0.37).to(device)
    before = vq.codebook.detach().clone()
    z = batch((40, 6), gen(4), dtype).to(device).requires_grad_()
    out = vq(z)
    (grad,) = torch.autograd.grad(out.loss, z)
    w = before[out.indices].to(dtype)
    torch.testing.assert_close(grad, 2 * 0.37 * (z.detach() - w) / z.numel())


@pytest.mark.parametrize("cls", ALL)
def test_training_step_changes_codebook_after_lookup(cls: type) -> None:
    # The test above must be able to fail: the codebook the outputs are compared with did change.
    torch.manual_seed(0)
    vq = cls(16, 6)
    opt = torch.optim.SGD(vq.parameters(), lr=0.5) if cls in (GradientVQ, GradientSOMVQ) else None
    z = batch((50, 6), gen(1))
    before = vq.codebook.clone()
    out = vq(z)
    if opt is not None:
        out.loss.backward()
        opt.step()
    assert not torch.equal(vq.codebook, before)
    assert not torch.allclose(out.quantized, vq.codebook[out.indices])
    assert torch.equal(out.quantized, before[out.indices])


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_perplexity_is_that_of_the_indices(cls: type, training: bool) -> None:
    torch.manual_seed(0)
    vq = cls(16, 2).train(training)
    out = vq(batch((8, 9, 2), gen(1)))
    torch.testing.assert_close(out.perplexity, metrics.perplexity(out.indices, 16))
    assert out.perplexity.item() > 1.0  # several codes used, so a constant would not pass


# --- 3. state ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", ALL)
def test_eval_mode_changes_no_buffer(cls: type, device: torch.device) -> None:
    torch.manual_seed(0)
    vq = cls(16, 4).to(device)
    vq(batch((20, 4), gen(0)).to(device))  # some training first, so the state is not the initial one
    vq.eval()
    before, params = buffers(vq), [p.clone() for p in vq.parameters()]
    g = gen(1)
    for _ in range(4):
        vq(batch((20, 4), g).to(device))
    assert_buffers_equal(vq, before)
    assert all(torch.equal(p, q) for p, q in zip(vq.parameters(), params))
    assert vq.step == 1
    vq.train()
    vq(batch((20, 4), g).to(device))
    assert vq.step == 2


@pytest.mark.parametrize("cls", ALL)
def test_state_dict_round_trip(cls: type) -> None:
    torch.manual_seed(0)
    vq = cls(16, 4, grid=(4, 4))
    g = gen(1)
    for i in range(5):
        z = batch((20, 4), g)
        if i == 2 and cls in NATIVE:
            z[0, 0] = float("nan")  # a skipped batch, so skipped_batches != 0 is carried too
        vq(z)
    torch.manual_seed(123)
    fresh = cls(16, 4, grid=(4, 4))
    assert not torch.equal(fresh.codebook, vq.codebook)
    fresh.load_state_dict(vq.state_dict())
    assert fresh.step == vq.step == 5 - (cls in NATIVE)
    for (name, a), (_, b) in zip(vq.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), name
    if cls in NATIVE:
        assert int(fresh.skipped_batches) == 1
    z = batch((20, 4), g)  # both continue identically
    for a, b in zip(vq(z), fresh(z)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("k, d, name", [(8, 4, "num_codes=8"), (16, 3, "dim=3")])
def test_loading_wrong_shape_names_the_argument(cls: type, k: int, d: int, name: str) -> None:
    src = cls(16, 4, grid=(16,))
    with pytest.raises(RuntimeError, match=name):
        cls(k, d, grid=(k,)).load_state_dict(src.state_dict())


# --- 4. low precision ----------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_input(cls: type, dtype: torch.dtype, device: torch.device) -> None:
    torch.manual_seed(0)
    vq = cls(16, 4, channel_dim=1).to(device)
    twin = copy.deepcopy(vq)
    z = batch((2, 4, 3, 5), gen(1), dtype).to(device).requires_grad_()
    out = vq(z)
    assert out.quantized.dtype == dtype and out.loss.dtype == torch.float32
    assert vq.codebook.dtype == torch.float32
    if cls in NATIVE:
        assert vq.ema_sums.dtype == vq.ema_counts.dtype == torch.float32
    # arithmetic is float32: the same as feeding the rounded values in float32
    ref_out = twin(z.detach().float())
    assert torch.equal(out.indices, ref_out.indices)
    torch.testing.assert_close(vq.codebook, twin.codebook, rtol=1e-5, atol=1e-6)
    assert torch.equal(out.quantized, ref_out.quantized.to(dtype))  # the codes, rounded once to dtype
    out.quantized.float().sum().backward()
    assert z.grad.dtype == dtype and torch.equal(z.grad, torch.ones_like(z))


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("cast_module", [False, True], ids=["fp32-module", "double-module"])
def test_float64_input(cls: type, cast_module: bool) -> None:
    # The native ops take fp32/fp16/bf16; a float64 model (e.g. for gradcheck) must still work.
    torch.manual_seed(0)
    vq = cls(16, 4)
    twin = copy.deepcopy(vq)
    if cast_module:
        vq.double()
    z = batch((30, 4), gen(1), torch.float64).requires_grad_()
    out = vq(z)
    assert out.quantized.dtype == torch.float64
    ref_out = twin(z.detach().float())
    assert torch.equal(out.indices, ref_out.indices)
    torch.testing.assert_close(out.quantized.float(), ref_out.quantized)
    (grad,) = torch.autograd.grad(out.quantized.sum() + out.loss, z)
    assert grad.dtype == torch.float64


@pytest.mark.parametrize("cls", NATIVE)
def test_autocast_conv_then_quantiser(cls: type) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), cls(16, 4, channel_dim=1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = model[0](torch.randn(2, 3, 5, 5))
        out = model[1](h)
    assert h.dtype == torch.bfloat16 and out.quantized.dtype == torch.bfloat16
    for name in ("codebook", "ema_sums", "ema_counts"):
        assert getattr(model[1], name).dtype == torch.float32
    (out.quantized.float().sum() + out.loss).backward()  # gradients reach the conv through the quantiser
    assert model[0].weight.grad is not None and model[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("cls", NATIVE)
@pytest.mark.parametrize("cast", ["half", "bfloat16", "double"])
def test_module_cast_keeps_state_float32(cls: type, cast: str) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), cls(16, 4, channel_dim=1))
    before = model[1].codebook.clone()
    getattr(model, cast)()
    vq = model[1]
    for name in ("codebook", "ema_sums", "ema_counts"):
        assert getattr(vq, name).dtype == torch.float32, name
    assert torch.equal(vq.codebook, before)  # not rounded through the lower precision
    assert vq._step.dtype == vq.skipped_batches.dtype == torch.int64
    dtype = model[0].weight.dtype
    out = model(torch.randn(2, 3, 5, 5, dtype=dtype))
    assert out.quantized.dtype == dtype and vq.step == 1


# --- 5. torch.compile ---------------------------------------------------------------------------------
# Inductor needs a C++ compiler for CPU code; without one (some minimal CI images) aot_eager still
# traces the ops through their meta kernels, which is the part this test is about.
COMPILE_BACKEND = "inductor" if any(shutil.which(c) for c in ("c++", "g++", "clang++")) else "aot_eager"


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_torch_compile_fullgraph_matches_eager(training: bool) -> None:
    torch.manual_seed(0)
    eager = KohonenVQ(16, 4, grid=(4, 4), channel_dim=1)
    eager(batch((2, 4, 3, 3), gen(9)))  # a trained (not initial) state for the eval case
    eager.train(training)
    twin = copy.deepcopy(eager)
    compiled = torch.compile(twin, fullgraph=True, backend=COMPILE_BACKEND)
    g = gen(1)
    for i in range(4):
        # Alternate inputs with and without grad: with grad, AOT autograd builds a training graph, where
        # inductor once ran the code lookup after the in-place codebook update.
        z = batch((2, 4, 3, 3), g)
        za, zb = z.clone().requires_grad_(i % 2 == 0), z.clone().requires_grad_(i % 2 == 0)
        a, b = eager(za), compiled(zb)
        assert torch.equal(a.indices, b.indices)
        torch.testing.assert_close(b.quantized, a.quantized)
        torch.testing.assert_close(b.loss, a.loss)
        torch.testing.assert_close(b.perplexity, a.perplexity)
        if za.requires_grad:  # straight-through and commitment gradients
            (ga,) = torch.autograd.grad(a.quantized.square().sum() + a.loss, za)
            (gb,) = torch.autograd.grad(b.quantized.square().sum() + b.loss, zb)
            torch.testing.assert_close(gb, ga)
    for name in ("codebook", "ema_sums", "ema_counts"):
        torch.testing.assert_close(getattr(twin, name), getattr(eager, name), rtol=1e-5, atol=1e-6)
    assert twin.step == eager.step == (5 if training else 1)


# --- 6. non-finite batches -----------------------------------------------------------------------------
@pytest.mark.parametrize("cls", NATIVE)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_batch_is_skipped(cls: type, bad: float, device: torch.device) -> None:
    torch.manual_seed(0)
    vq = cls(16, 4, grid=(4, 4)).to(device)
    g = gen(1)
    vq(batch((30, 4), g).to(device))
    before = buffers(vq)
    z = batch((30, 4), g)
    z[7, 2] = bad
    vq(z.to(device))
    assert_buffers_equal(vq, before, skip=("skipped_batches",))
    assert int(vq.skipped_batches) == int(before["skipped_batches"]) + 1
    assert vq.step == 1
    vq(batch((30, 4), g).to(device))  # the next good batch trains normally
    assert vq.step == 2 and not torch.equal(vq.codebook, before["codebook"])
    assert torch.isfinite(vq.codebook).all()


@pytest.mark.parametrize("cls", NATIVE)
def test_strict_raises_and_leaves_state_unchanged(cls: type, device: torch.device) -> None:
    torch.manual_seed(0)
    vq = cls(16, 4, strict=True).to(device)
    g = gen(1)
    vq(batch((30, 4), g).to(device))
    before = buffers(vq)
    z = batch((30, 4), g)
    z[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="NaN or Inf"):
        vq(z.to(device))
    assert_buffers_equal(vq, before)
    vq(batch((30, 4), g).to(device))
    assert vq.step == 2


# --- 7. validation -------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, name", [
    (dict(shrink=-0.1), "shrink"),
    (dict(decay=1.0), "decay"),
    (dict(decay=-0.01), "decay"),
    (dict(sigma=0.0), "sigma"),
    (dict(sigma=-1.0), "sigma"),
    (dict(base=0.0), "base"),
    (dict(eps=-1e-5), "eps"),
    (dict(init_count=-1.0), "init_count"),
    (dict(num_codes=0), "num_codes"),
    (dict(dim=0), "dim"),
    (dict(neighbourhood="mexican-hat"), "neighbourhood"),
    (dict(grid=(4, 3)), "grid"),
    (dict(grid=(4, 0, 4)), "grid"),
    (dict(commitment=-1.0), "commitment"),
    (dict(shrink=float("nan")), "shrink"),
])
def test_kohonen_constructor_validation(kwargs: dict, name: str) -> None:
    args = dict(num_codes=16, dim=4) | kwargs
    with pytest.raises(ValueError, match=name):
        KohonenVQ(**args)


@pytest.mark.parametrize("cls", [EMAVQ, GradientVQ, GradientSOMVQ])
@pytest.mark.parametrize("kwargs, name", [(dict(num_codes=0), "num_codes"), (dict(dim=0), "dim"),
                                          (dict(grid=(5, 3)), "grid"), (dict(commitment=-0.5), "commitment")])
def test_other_constructor_validation(cls: type, kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        cls(**(dict(num_codes=16, dim=4) | kwargs))


@pytest.mark.parametrize("kwargs, name", [(dict(decay=1.5), "decay"), (dict(eps=-1.0), "eps"),
                                          (dict(init_count=-2.0), "init_count")])
def test_emavq_constructor_validation(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        EMAVQ(16, 4, **kwargs)


@pytest.mark.parametrize("cls", [KohonenVQ, EMAVQ, GradientVQ, GradientSOMVQ])
def test_precision_validation(cls: type) -> None:
    with pytest.raises(ValueError, match=r"precision must be one of \('exact', 'tf32'\), got 'fp8'"):
        cls(16, 4, precision="fp8")


@pytest.mark.parametrize("cls", [KohonenVQ, EMAVQ, GradientVQ, GradientSOMVQ])
def test_tf32_precision_reaches_the_assignment(cls: type, device: torch.device) -> None:
    # Codes far apart compared with TF32 rounding: both searches pick the same codes, so a training step
    # gives the same output and state; on CPU the tf32 setting runs the exact search anyway.
    torch.manual_seed(0)
    exact, fast = cls(64, 16).to(device), cls(64, 16, precision="tf32").to(device)
    fast.load_state_dict(exact.state_dict())
    assert "precision='tf32'" in repr(fast)
    z = (exact.codebook[torch.randint(64, (500,))] + 0.01 * torch.randn(500, 16, device=device)).requires_grad_()
    out_exact, out_fast = exact(z), fast(z)
    assert torch.equal(out_exact.indices, out_fast.indices)
    torch.testing.assert_close(out_fast.quantized, out_exact.quantized)
    torch.testing.assert_close(out_fast.loss, out_exact.loss)
    torch.testing.assert_close(fast.codebook, exact.codebook)


def test_gradient_som_constructor_validation() -> None:
    with pytest.raises(ValueError, match="neighbour_weight"):
        GradientSOMVQ(16, 4, neighbour_weight=-1.0)


def test_init_codebook_validates_shape() -> None:
    for cls in ALL:
        with pytest.raises(ValueError, match="init_codebook"):
            cls(16, 4).init_codebook(torch.zeros(16, 5))


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_bad_input(cls: type, training: bool) -> None:
    vq = cls(16, 4, channel_dim=1).train(training)
    before = buffers(vq)
    with pytest.raises(ValueError, match="dim=4"):  # wrong channel count: names the expected dim
        vq(torch.randn(2, 3, 5, 5))
    with pytest.raises(ValueError, match="channel_dim"):  # no dim 1 at all
        vq(torch.randn(4))
    with pytest.raises(TypeError, match="floating-point"):
        vq(torch.ones(2, 4, 5, 5, dtype=torch.int64))
    assert_buffers_equal(vq, before)


# --- 9. gradient-trained baselines --------------------------------------------------------------------
def test_gradient_vq_loss_terms_and_their_gradients() -> None:
    torch.manual_seed(0)
    beta = 0.3
    vq = GradientVQ(12, 5, commitment=beta)
    z = batch((40, 5), gen(1)).requires_grad_()
    out = vq(z)
    w = vq.weight.detach()
    diff = w[out.indices] - z.detach()  # (N, D)
    n_el = diff.numel()
    # loss = ||sg(z) - w||^2 (codebook term) + beta ||z - sg(w)||^2 (commitment term), both means
    torch.testing.assert_close(out.loss, (1 + beta) * (diff**2).mean(), rtol=1e-5, atol=0)
    gw, gz = torch.autograd.grad(out.loss, (vq.weight, z))
    # the codebook only sees the codebook term, the encoder only the commitment term
    want_gw = torch.zeros_like(w).index_add_(0, out.indices, 2 * diff / n_el)
    torch.testing.assert_close(gw, want_gw, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(gz, -beta * 2 * diff / n_el, rtol=1e-5, atol=1e-8)
    unused = torch.ones(12, dtype=torch.bool)
    unused[out.indices] = False
    assert (gw[unused] == 0).all() and (gw[~unused] != 0).any()


@pytest.mark.parametrize("cls", [GradientVQ, GradientSOMVQ])
def test_gradient_training_reduces_quantisation_error(cls: type) -> None:
    torch.manual_seed(0)
    g = gen(5)
    centres = torch.randn(6, 3, generator=g) * 4
    data = centres[torch.randint(0, 6, (600,), generator=g)] + 0.1 * torch.randn(600, 3, generator=g)
    vq = cls(16, 3, grid=(4, 4))
    opt = torch.optim.Adam(vq.parameters(), lr=0.1)
    start = metrics.quantisation_error(data, vq.codebook)
    for i in range(60):
        out = vq(data[i % 6 * 100:(i % 6 + 1) * 100])
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert vq.step == 60
    assert metrics.quantisation_error(data, vq.codebook) < 0.5 * start


@pytest.mark.parametrize("grid", [(5, 5), (9,)])
@pytest.mark.parametrize("neighbour_weight", [0.0, 0.7])
def test_gradient_som_pulls_grid_neighbours(grid: tuple[int, ...], neighbour_weight: float) -> None:
    torch.manual_seed(0)
    k = math.prod(grid)
    vq = GradientSOMVQ(k, 3, grid=grid, neighbour_weight=neighbour_weight, commitment=0.0)
    z = batch((1, 3), gen(2)) + 5.0  # one input far from all codes: every pulled code's gradient is clearly > 0
    vq.init_codebook(torch.randn(k, 3, generator=gen(3)))
    centre = k // 2  # an interior node on both grids, so it has a full set of neighbours
    vq.weight.data[centre] = z[0] - 0.5
    out = vq(z)
    winner = int(out.indices[0])
    assert winner == centre
    (gw,) = torch.autograd.grad(out.loss, vq.weight)
    coords = ref.grid_coordinates(grid)
    near = (coords - coords[winner]).abs().amax(-1) == 1
    moved = gw.abs().sum(-1) > 0
    assert moved[winner]
    assert torch.equal(moved & ~near, torch.nn.functional.one_hot(torch.tensor(winner), k).bool())  # far: 0
    if neighbour_weight == 0:
        assert not moved[near].any()
    else:
        assert moved[near].all()
        # loss = own + weight * mean over the existing neighbours of their mean squared distance
        w = vq.weight.detach()
        own = ((w[winner] - z[0]) ** 2).mean()
        nbr = ((w[near] - z[0]) ** 2).mean()
        torch.testing.assert_close(out.loss, own + neighbour_weight * nbr, rtol=1e-5, atol=0)


def test_gradient_som_border_winner_averages_existing_neighbours() -> None:
    grid = (4, 4)
    vq = GradientSOMVQ(16, 2, grid=grid, neighbour_weight=1.0, commitment=0.0)
    z = torch.tensor([[10.0, 10.0]])
    vq.weight.data[0] = z[0]  # corner code 0: three neighbours (1, 4, 5) exist
    out = vq(z)
    assert int(out.indices[0]) == 0
    w = vq.weight.detach()
    torch.testing.assert_close(out.loss, ((w[[1, 4, 5]] - z) ** 2).mean(), rtol=1e-5, atol=0)
