"""Grid helpers (kohonen_vq.grid, the quantisers' grid methods) and codebook metrics (kohonen_vq.metrics),
each against a brute-force statement of its definition."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

import kohonen_vq
from kohonen_vq import grid as grids
from kohonen_vq import metrics
from kohonen_vq import reference as ref

GRIDS = [(7,), (4, 3), (2, 3, 4)]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- grid ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("grid", GRIDS)
def test_indices_to_coords_matches_reference_layout(grid: tuple[int, ...]) -> None:
    k = math.prod(grid)
    # METHOD.md §3: code k at (k mod s0, (k div s0) mod s1, ...), the reference's G(k)
    assert torch.equal(grids.indices_to_coords(torch.arange(k), grid), ref.grid_coordinates(grid))


@pytest.mark.parametrize("grid", GRIDS)
def test_coords_round_trip(grid: tuple[int, ...]) -> None:
    k = math.prod(grid)
    idx = torch.randint(0, k, (5, 6), generator=gen())
    coords = grids.indices_to_coords(idx, grid)
    assert coords.shape == (5, 6, len(grid)) and coords.dtype == torch.int64
    assert torch.equal(grids.coords_to_indices(coords, grid), idx)
    every = torch.arange(k)
    assert torch.equal(grids.coords_to_indices(grids.indices_to_coords(every, grid), grid), every)


def test_coords_to_indices_rejects_wrong_axes() -> None:
    with pytest.raises(ValueError, match="axes"):
        grids.coords_to_indices(torch.zeros(3, 2, dtype=torch.long), (8,))


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("offset", [-3, -1, 0, 2, 5])
def test_shift_indices_clamps_at_border(grid: tuple[int, ...], offset: int) -> None:
    k = math.prod(grid)
    idx = torch.arange(k)
    shifted = grids.shift_indices(idx, offset, grid)
    coords = ref.grid_coordinates(grid)
    for i in range(k):  # brute force: move every axis, clamp to [0, size - 1]
        want = [min(max(int(c) + offset, 0), s - 1) for c, s in zip(coords[i], grid)]
        assert coords[shifted[i]].tolist() == want


def test_shift_indices_per_axis_offset() -> None:
    grid = (5, 4)
    idx = torch.arange(20)
    shifted = grids.shift_indices(idx, (2, -1), grid)
    c = grids.indices_to_coords(idx, grid)
    want = torch.stack([(c[:, 0] + 2).clamp(0, 4), (c[:, 1] - 1).clamp(0, 3)], dim=-1)
    assert torch.equal(grids.indices_to_coords(shifted, grid), want)
    with pytest.raises(ValueError, match="offset"):
        grids.shift_indices(idx, (1, 2, 3), grid)


@pytest.mark.parametrize("grid", GRIDS)
def test_are_grid_neighbours_is_chebyshev_one(grid: tuple[int, ...]) -> None:
    k = math.prod(grid)
    a, b = torch.meshgrid(torch.arange(k), torch.arange(k), indexing="ij")
    coords = ref.grid_coordinates(grid)
    cheb = (coords[a] - coords[b]).abs().amax(-1)
    assert torch.equal(grids.are_grid_neighbours(a, b, grid), cheb == 1)


@pytest.mark.parametrize("k, expected", [(512, (32, 16)), (256, (16, 16)), (1024, (32, 32)), (13, (13, 1)),
                                         (1, (1, 1))])
def test_auto_grid_examples(k: int, expected: tuple[int, int]) -> None:
    # 512 -> 32 x 16 is the authors' layout; square K -> square grid; prime K -> a line (METHOD.md §3)
    assert grids.auto_grid(k) == expected


@pytest.mark.parametrize("k", [6, 12, 18, 30, 97, 100, 120, 2048])
def test_auto_grid_is_the_squarest_factorisation(k: int) -> None:
    s0, s1 = grids.auto_grid(k)
    assert s0 * s1 == k and s0 >= s1
    best = max(d for d in range(1, k + 1) if k % d == 0 and d * d <= k)
    assert s1 == best


def test_resolve_grid_validation() -> None:
    assert grids.resolve_grid(None, 512) == (32, 16)
    assert grids.resolve_grid([4, 4], 16) == (4, 4)
    with pytest.raises(ValueError, match="grid"):
        grids.resolve_grid((4, 3), 16)
    with pytest.raises(ValueError, match="grid"):
        grids.resolve_grid((), 16)
    with pytest.raises(ValueError, match="num_codes"):
        grids.auto_grid(0)


# --- the quantisers' grid/code helpers ----------------------------------------------------------
QUANTISERS = [kohonen_vq.KohonenVQ, kohonen_vq.EMAVQ, kohonen_vq.GradientVQ, kohonen_vq.GradientSOMVQ]


@pytest.mark.parametrize("cls", QUANTISERS)
@pytest.mark.parametrize("channel_dim", [1, -1])
def test_indices_to_codes_layout(cls: type, channel_dim: int) -> None:
    torch.manual_seed(0)
    vq = cls(12, 3, grid=(4, 3), channel_dim=channel_dim).eval()
    z = torch.randn(2, 3, 5, 4) if channel_dim == 1 else torch.randn(2, 5, 4, 3)
    out = vq(z)
    codes = vq.indices_to_codes(out.indices)
    assert codes.shape == z.shape
    # eval mode: the output codes are exactly what the indices look up
    assert torch.equal(codes, out.quantized)
    expected = vq.codebook[out.indices]
    assert torch.equal(codes, expected if channel_dim == -1 else expected.movedim(-1, 1))


@pytest.mark.parametrize("cls", QUANTISERS)
def test_module_grid_helpers(cls: type) -> None:
    vq = cls(12, 3, grid=(4, 3))
    idx = torch.arange(12).view(3, 4)
    assert torch.equal(vq.indices_to_coords(idx), grids.indices_to_coords(idx, (4, 3)))
    assert torch.equal(vq.coords_to_indices(vq.indices_to_coords(idx)), idx)
    assert torch.equal(vq.shift_indices(idx, -2), grids.shift_indices(idx, -2, (4, 3)))
    assert cls(512, 2).grid == (32, 16)


# --- metrics -------------------------------------------------------------------------------------
def brute_perplexity(indices: torch.Tensor, k: int) -> float:
    counts = [int((indices == j).sum()) for j in range(k)]
    n = sum(counts)
    return math.exp(-sum(c / n * math.log(c / n) for c in counts if c))


def test_perplexity_uniform_is_num_codes() -> None:
    k = 16
    idx = torch.arange(k).repeat(5)[torch.randperm(5 * k, generator=gen())]
    assert metrics.perplexity(idx, k).item() == pytest.approx(k, rel=1e-5)


def test_perplexity_single_code_is_one() -> None:
    assert metrics.perplexity(torch.full((7, 3), 4), 16).item() == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(3))
def test_perplexity_matches_definition(seed: int) -> None:
    k = 10
    idx = torch.randint(0, 6, (4, 25), generator=gen(seed)) ** 2 % k  # skewed, some codes unused
    assert metrics.perplexity(idx, k).item() == pytest.approx(brute_perplexity(idx, k), rel=1e-5)
    counts = torch.bincount(idx.flatten(), minlength=k)
    assert metrics.perplexity_from_counts(counts.float()).item() == pytest.approx(brute_perplexity(idx, k), rel=1e-5)


def test_perplexity_of_empty_batch_is_zero() -> None:
    assert metrics.perplexity_from_counts(torch.zeros(8)).item() == 0.0


def test_codebook_usage() -> None:
    k = 10
    idx = torch.tensor([[0, 3, 3], [9, 0, 4]])
    assert metrics.codebook_usage(idx, k).item() == pytest.approx(len(set(idx.flatten().tolist())) / k)
    assert metrics.codebook_usage(torch.arange(k), k).item() == 1.0


@pytest.mark.parametrize("n, k, d", [(50, 7, 3), (300, 64, 16), (1, 1, 5)])
def test_quantisation_error_vs_brute_force(n: int, k: int, d: int) -> None:
    g = gen(n)
    x, w = torch.randn(n, d, generator=g), torch.randn(k, d, generator=g)
    want = torch.stack([((w - row) ** 2).sum(-1).min() for row in x]).mean()
    torch.testing.assert_close(metrics.quantisation_error(x, w), want, rtol=1e-5, atol=1e-6)


def test_topographic_error_ordered_1d_map_is_zero() -> None:
    k = 9
    codebook = torch.arange(k, dtype=torch.float32)[:, None]  # sorted scalars along a 1D grid
    # data strictly between neighbouring codes (never half-way, to avoid ties): two nearest are grid neighbours
    x = (torch.arange(k - 1) + 0.3 + 0.4 * torch.rand(k - 1, generator=gen())).repeat(3)[:, None]
    assert metrics.topographic_error(x, codebook, (k,)).item() == 0.0


def test_topographic_error_shuffled_map_is_high() -> None:
    k = 9
    # value v sits at grid position pos[v]; consecutive values are >= 2 cells apart, so every row between
    # two consecutive values has two nearest codes that are not grid neighbours
    pos = [0, 2, 4, 6, 8, 1, 3, 5, 7]
    assert all(abs(a - b) >= 2 for a, b in itertools.pairwise(pos))
    codebook = torch.empty(k, 1)
    codebook[pos, 0] = torch.arange(k, dtype=torch.float32)
    x = (torch.arange(k - 1) + 0.3 + 0.4 * torch.rand(k - 1, generator=gen())).repeat(3)[:, None]
    assert metrics.topographic_error(x, codebook, (k,)).item() == 1.0


@pytest.mark.parametrize("grid", [(12,), (4, 3)])
def test_topographic_error_vs_brute_force(grid: tuple[int, ...]) -> None:
    g = gen(7)
    k = math.prod(grid)
    x, w = torch.randn(200, 2, generator=g), torch.randn(k, 2, generator=g)
    coords = ref.grid_coordinates(grid)
    errors = 0
    for row in x:
        first, second = ((w - row) ** 2).sum(-1).argsort()[:2]
        errors += int((coords[first] - coords[second]).abs().max() != 1)
    assert metrics.topographic_error(x, w, grid).item() == pytest.approx(errors / len(x))


def test_topographic_error_degenerate_inputs() -> None:
    assert metrics.topographic_error(torch.randn(5, 2), torch.randn(1, 2), (1,)).item() == 0.0
    assert metrics.topographic_error(torch.randn(0, 2), torch.randn(4, 2), (4,)).item() == 0.0
