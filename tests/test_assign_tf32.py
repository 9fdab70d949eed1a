"""assign(..., precision="tf32"): the tensor-core search on CUDA against the plain-PyTorch reference, and its
contract on CPU (the exact search, bit for bit)."""
from __future__ import annotations

import math

import pytest
import torch

from kohonen_vq import ops
from kohonen_vq import reference as ref

# TF32 keeps 10 mantissa bits: each product x_d w_d carries a relative error below 2^-10, so a dot product
# is off by at most 2^-10 ||x|| ||w||, and the distance gap of two codes by twice that; <= ||x||^2 + ||w||^2.
TF32_GAP = 2.0 ** -9

SHAPES = [  # (N, K, D): single code, D = 1, D not a multiple of 8 or 32, K around the 128-code tile, N tails
    (1, 1, 1), (7, 3, 1), (7, 513, 3), (257, 48, 64), (257, 1, 130), (1000, 3, 130), (1, 513, 130),
    (257, 513, 64), (4096, 129, 33), (300, 4100, 16),
]


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def check_tf32(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """The chosen code is within the TF32 gap of the nearest, and sqdist is its fp32 distance."""
    indices, sqdist = ops.assign(x.cuda(), codebook.cuda(), precision="tf32")
    assert indices.dtype == torch.int64 and sqdist.dtype == torch.float32 and indices.is_cuda
    indices, sqdist = indices.cpu(), sqdist.cpu()
    xf, wf = x.float(), codebook.float()
    assert ((indices >= 0) & (indices < wf.shape[0])).all()
    _, nearest = ref.assign(x, codebook)
    chosen = ((xf - wf[indices]) ** 2).sum(-1)
    gap = TF32_GAP * (xf.square().sum(-1) + wf.square().sum(-1).max())
    assert ((chosen - nearest) <= gap).all(), "the chosen code is farther than TF32 rounding allows"
    torch.testing.assert_close(sqdist, chosen, rtol=1e-5, atol=1e-6)
    return indices


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_tf32_within_rounding_of_the_nearest(shape: tuple[int, int, int], dtype: torch.dtype) -> None:
    n, k, d = shape
    gen = generator(n + 3 * k + 7 * d)
    check_tf32(torch.randn(n, d, generator=gen).to(dtype), torch.randn(k, d, generator=gen).to(dtype))


@pytest.mark.cuda
@pytest.mark.parametrize("layout", ["transposed", "strided"])
def test_tf32_non_contiguous(layout: str) -> None:
    gen = generator(1)
    x, w = torch.randn(300, 40, generator=gen), torch.randn(513, 40, generator=gen)
    x = x.T.contiguous().T if layout == "transposed" else x.repeat_interleave(2, dim=-1)[:, ::2]
    assert not x.is_contiguous()
    check_tf32(x, w)


@pytest.mark.cuda
@pytest.mark.parametrize("n", [64, 20000])  # small N splits K across blocks; large N does not
def test_tf32_agrees_with_exact_on_separated_codes(n: int) -> None:
    # Rows near one of 2048 codes: the nearest is far clearer than TF32 rounding, so both searches agree.
    gen = generator(n)
    codebook = torch.randn(2048, 64, generator=gen)
    x = codebook[torch.randint(2048, (n,), generator=gen)] + 0.05 * torch.randn(n, 64, generator=gen)
    exact, _ = ops.assign(x.cuda(), codebook.cuda())
    assert torch.equal(check_tf32(x, codebook), exact.cpu())


@pytest.mark.cuda
def test_tf32_ties_and_duplicates_go_to_the_lowest_index() -> None:
    # Small integers are exact in TF32, so exact ties stay ties; each lattice code is stored twice.
    gen = generator(2)
    lattice = torch.cartesian_prod(torch.arange(0, 16, 2.0), torch.arange(0, 16, 2.0))
    codebook = torch.nn.functional.pad(lattice[torch.randperm(128, generator=gen) % 64], (0, 15))
    x = torch.nn.functional.pad(torch.cartesian_prod(torch.arange(15.0), torch.arange(15.0)), (0, 15))
    expected, expected_sqdist = ref.assign(x, codebook)
    indices, sqdist = ops.assign(x.cuda(), codebook.cuda(), precision="tf32")
    assert torch.equal(indices.cpu(), expected)
    assert torch.equal(sqdist.cpu(), expected_sqdist)


@pytest.mark.cuda
def test_tf32_nan_rows_map_to_code_zero() -> None:
    gen = generator(3)
    x, codebook = torch.randn(20, 4, generator=gen), torch.randn(9, 4, generator=gen)
    x[[3, 17], 1] = math.nan
    indices, _ = ops.assign(x.cuda(), codebook.cuda(), precision="tf32")
    assert indices[[3, 17]].tolist() == [0, 0]


@pytest.mark.cuda
def test_tf32_empty_batch() -> None:
    indices, sqdist = ops.assign(torch.zeros(0, 5, device="cuda"), torch.ones(3, 5, device="cuda"),
                                 precision="tf32")
    assert indices.shape == sqdist.shape == (0,)


def test_tf32_on_cpu_is_the_exact_search() -> None:
    gen = generator(4)
    x, codebook = torch.randn(1000, 33, generator=gen), torch.randn(300, 33, generator=gen)
    exact = ops.assign(x, codebook)
    fast = ops.assign(x, codebook, precision="tf32")
    assert torch.equal(fast[0], exact[0]) and torch.equal(fast[1], exact[1])


def test_tf32_under_torch_compile(device: torch.device) -> None:
    x, codebook = torch.randn(50, 8, device=device), torch.randn(20, 8, device=device)
    compiled = torch.compile(lambda a, b: ops.assign(a, b, precision="tf32"), fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x, codebook), ops.assign(x, codebook, precision="tf32"))
