"""The native ops against kohonen_vq.reference on random inputs, on every CPU kernel variant and on CUDA."""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import pytest
import torch

import kohonen_vq
from kohonen_vq import ops
from kohonen_vq import reference as ref

SUPPORTED_ISAS = kohonen_vq.build_info()["cpu_isas_supported"]
LOW_PRECISION = [torch.float32, torch.float16, torch.bfloat16]


@pytest.fixture(params=["generic", "avx2", "avx512", pytest.param("cuda", marks=pytest.mark.cuda)])
def assign_device(request: pytest.FixtureRequest) -> Iterator[torch.device]:
    """Like ``device``, but with one CPU parameter per assignment kernel (instruction set)."""
    if request.param == "cuda":
        yield torch.device("cuda")
        return
    if request.param not in SUPPORTED_ISAS:
        pytest.skip(f"CPU kernel {request.param!r} is not supported here ({SUPPORTED_ISAS})")
    ops.set_cpu_isa(request.param)
    try:
        yield torch.device("cpu")
    finally:
        ops.set_cpu_isa("auto")


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def relayout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as ``t`` in a non-contiguous view (or ``t`` itself for "contiguous")."""
    if layout == "contiguous":
        return t
    if layout == "transposed":  # column-major storage, seen through .T
        return t.T.contiguous().T
    if layout == "strided":  # every other element of a buffer twice as wide
        return t.repeat_interleave(2, dim=-1)[..., ::2]
    raise ValueError(layout)


def assert_rel_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float, what: str) -> None:
    """|actual - expected| <= rtol * scale, with the scale of a matrix entry being its row's largest
    magnitude (rows are vectors whose small components legitimately carry cancellation error)."""
    actual = actual.cpu()
    assert actual.isfinite().all(), f"{what}: non-finite values"
    scale = expected.abs()
    if expected.dim() == 2:
        scale = scale.amax(dim=1, keepdim=True)
    rel = (actual - expected).abs() / scale.clamp_min(torch.finfo(torch.float32).tiny)
    assert rel.max().item() <= rtol, f"{what}: max relative error {rel.max().item():.3g} > {rtol:g}"


# ---------------------------------------------------------------------------------------------- assign

ASSIGN_SHAPES = [  # (N, K, D): empty batch, single code, D = 1, odd sizes around chunk/panel boundaries
    (0, 3, 3), (1, 1, 1), (7, 3, 1), (7, 513, 3), (257, 48, 64), (257, 1, 130),
    (1000, 48, 3), (1000, 3, 130), (1, 513, 130), (257, 513, 64),
]


def check_assign(x: torch.Tensor, codebook: torch.Tensor, device: torch.device) -> None:
    """Indices may differ from the reference only between near-tied codes: the chosen code's distance must
    equal the reference minimum up to fp32 rounding of ||w||^2 - 2 x.w + ||x||^2."""
    indices, sqdist = ops.assign(x.to(device), codebook.to(device))
    assert indices.dtype == torch.int64 and sqdist.dtype == torch.float32
    assert indices.shape == sqdist.shape == (x.shape[0],)
    assert indices.device.type == sqdist.device.type == device.type
    indices, sqdist = indices.cpu(), sqdist.cpu()
    _, ref_min = ref.assign(x, codebook)
    xf, wf = x.float(), codebook.float()
    assert ((indices >= 0) & (indices < wf.shape[0])).all()
    chosen = ((xf - wf[indices]) ** 2).sum(-1)
    tol = 1e-5 * (xf.square().sum(-1) + wf.square().sum(-1).max())
    assert ((chosen - ref_min).abs() <= tol).all(), "chosen code is farther than the nearest one"
    torch.testing.assert_close(sqdist, chosen, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("shape", ASSIGN_SHAPES, ids=str)
def test_assign_matches_reference(assign_device: torch.device, shape: tuple[int, int, int],
                                  dtype: torch.dtype) -> None:
    n, k, d = shape
    gen = generator(n * 7 + k * 3 + d)
    check_assign(torch.randn(n, d, generator=gen).to(dtype), torch.randn(k, d, generator=gen).to(dtype),
                 assign_device)


@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("layout", ["transposed", "strided"])
@pytest.mark.parametrize("shape", [(7, 3, 1), (257, 48, 64), (300, 513, 3)], ids=str)
def test_assign_non_contiguous(assign_device: torch.device, shape: tuple[int, int, int], layout: str,
                               dtype: torch.dtype) -> None:
    n, k, d = shape
    gen = generator(1)
    x = relayout(torch.randn(n, d, generator=gen).to(dtype), layout)
    codebook = relayout(torch.randn(k, d, generator=gen).to(dtype), layout)
    assert not x.is_contiguous() or d == 1
    check_assign(x, codebook, assign_device)


@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("d", [1, 5, 64])
def test_assign_duplicate_codes_go_to_lowest_index(assign_device: torch.device, d: int,
                                                   dtype: torch.dtype) -> None:
    # 12 well separated codes, each stored 4 times at shuffled positions; every row is near one of them.
    gen = generator(d)
    base = torch.arange(12.0)[:, None] * 2 + torch.randn(12, d, generator=gen) * 0.1
    codebook = base[torch.randperm(48, generator=gen) % 12].to(dtype)
    x = (base[torch.randint(12, (300,), generator=gen)] + torch.randn(300, d, generator=gen) * 0.1).to(dtype)
    expected, _ = ref.assign(x, codebook)
    indices, _ = ops.assign(x.to(assign_device), codebook.to(assign_device))
    assert torch.equal(indices.cpu(), expected)


@pytest.mark.parametrize("d", [2, 3, 17])
def test_assign_exact_ties_between_distinct_codes(assign_device: torch.device, d: int) -> None:
    # Integer points: every distance is exact in fp32 whatever the formula, and points halfway between
    # codes on the even lattice tie between 2 or 4 different codes.
    gen = generator(d)
    lattice = torch.cartesian_prod(torch.arange(0, 16, 2.0), torch.arange(0, 16, 2.0))
    codebook = torch.nn.functional.pad(lattice[torch.randperm(64, generator=gen)], (0, d - 2))
    points = torch.cartesian_prod(torch.arange(15.0), torch.arange(15.0))
    x = torch.nn.functional.pad(points, (0, d - 2)).repeat(2, 1)
    expected, expected_sqdist = ref.assign(x, codebook)
    indices, sqdist = ops.assign(x.to(assign_device), codebook.to(assign_device))
    assert torch.equal(indices.cpu(), expected)
    assert torch.equal(sqdist.cpu(), expected_sqdist)


def test_assign_identical_codes(assign_device: torch.device) -> None:
    codebook = torch.ones(70, 3)
    indices, _ = ops.assign(torch.randn(33, 3, generator=generator()).to(assign_device), codebook.to(assign_device))
    assert (indices == 0).all()


def test_assign_nan_rows_map_to_code_zero(assign_device: torch.device) -> None:
    gen = generator()
    x, codebook = torch.randn(20, 4, generator=gen), torch.randn(9, 4, generator=gen)
    x[[3, 17], 1] = math.nan
    indices, _ = ops.assign(x.to(assign_device), codebook.to(assign_device))
    expected, _ = ref.assign(x, codebook)
    assert indices[[3, 17]].tolist() == [0, 0]
    assert torch.equal(indices.cpu(), expected)


# --------------------------------------------------------------------------------------- cluster_stats

STATS_SHAPES = [(0, 3, 5), (1, 1, 1), (7, 3, 1), (257, 48, 64), (1000, 513, 3), (1000, 1, 130), (7, 513, 130)]


def check_cluster_stats(x: torch.Tensor, indices: torch.Tensor, k: int, device: torch.device) -> None:
    sums, counts = ops.cluster_stats(x.to(device), indices.to(device), k)
    assert sums.dtype == counts.dtype == torch.float32
    assert sums.shape == (k, x.shape[1]) and counts.shape == (k,)
    assert sums.device.type == counts.device.type == device.type
    ref_sums, ref_counts = ref.cluster_stats(x, indices, k)
    # Loose enough for float32 accumulation in any order (the CPU kernel accumulates in float64).
    torch.testing.assert_close(sums.cpu(), ref_sums, rtol=1e-5, atol=1e-4)
    assert torch.equal(counts.cpu(), ref_counts)


@pytest.mark.parametrize("index_dtype", [torch.int64, torch.int32])
@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("shape", STATS_SHAPES, ids=str)
def test_cluster_stats_matches_reference(device: torch.device, shape: tuple[int, int, int], dtype: torch.dtype,
                                         index_dtype: torch.dtype) -> None:
    n, k, d = shape
    gen = generator(n + k + d)
    x = torch.randn(n, d, generator=gen).to(dtype)
    indices = torch.randint(k, (n,), generator=gen, dtype=index_dtype)
    check_cluster_stats(x, indices, k, device)


@pytest.mark.parametrize("layout", ["transposed", "strided"])
def test_cluster_stats_non_contiguous(device: torch.device, layout: str) -> None:
    gen = generator()
    x = relayout(torch.randn(301, 9, generator=gen), layout)
    indices = relayout(torch.randint(13, (301,), generator=gen), "strided")
    check_cluster_stats(x, indices, 13, device)


def test_cluster_stats_without_range_check_matches_reference(device: torch.device) -> None:
    gen = generator(5)
    x = torch.randn(500, 7, generator=gen)
    indices = torch.randint(11, (500,), generator=gen)
    sums, counts = ops.cluster_stats(x.to(device), indices.to(device), 11, check_range=False)
    ref_sums, ref_counts = ref.cluster_stats(x, indices, 11)
    torch.testing.assert_close(sums.cpu(), ref_sums, rtol=1e-5, atol=1e-4)
    assert torch.equal(counts.cpu(), ref_counts)


def test_cluster_stats_cpu_checks_the_range_even_when_told_not_to() -> None:
    with pytest.raises(RuntimeError, match="argument 'indices' must lie in \\[0, 3\\), got 3 at position 1"):
        ops.cluster_stats(torch.zeros(2, 4), torch.tensor([0, 3]), 3, check_range=False)


@pytest.mark.cuda
@pytest.mark.parametrize("repeat", [1, 5000])  # 20000 rows of 2 codes take the shared-memory kernel
def test_cluster_stats_cuda_without_range_check_leaves_out_of_range_rows_out(repeat: int) -> None:
    # No synchronising check: the kernel must still never write outside its outputs.
    x = torch.arange(8.0).view(4, 2).repeat(repeat, 1).cuda()
    indices = torch.tensor([0, 5, -2, 1]).repeat(repeat).cuda()
    sums, counts = ops.cluster_stats(x, indices, 2, check_range=False)
    assert torch.equal(counts.cpu(), torch.tensor([1.0, 1.0]) * repeat)
    assert torch.equal(sums.cpu(), torch.tensor([[0.0, 1.0], [6.0, 7.0]]) * repeat)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("shape", [(60000, 7, 64), (80000, 100, 5), (30000, 1, 130)], ids=str)
def test_cluster_stats_cuda_large_batch_of_few_codes(shape: tuple[int, int, int], dtype: torch.dtype) -> None:
    # Many rows per code: the shared-memory partial sums, with skewed code frequencies and a strided x.
    n, k, d = shape
    gen = generator(n + k)
    x = relayout(torch.randn(n, d, generator=gen).to(dtype), "strided")
    indices = (torch.rand(n, generator=gen) ** 2 * k).long()
    check_cluster_stats(x, indices, k, torch.device("cuda"))


def test_cluster_stats_bit_identical_across_thread_counts() -> None:
    gen = generator()
    x = torch.randn(5000, 19, generator=gen) * 100
    # Skewed code frequencies, so that the per-thread split of codes is uneven.
    indices = (torch.rand(5000, generator=gen) ** 3 * 37).long()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ops.cluster_stats(x, indices, 37)
        torch.set_num_threads(2)
        two = ops.cluster_stats(x, indices, 37)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


# ----------------------------------------------------------------------------------------- som_update_

def run_updates(device: torch.device, grid: Sequence[int], *, d: int = 5, batch: int = 48, updates: int = 20,
                init_count: float = 1.0, step: int = 0, seed: int = 0, **kwargs) -> None:
    """Feeds the same realistic batches (random x assigned to the current reference codebook) to the op
    and to the reference, comparing the state after every update."""
    gen = generator(seed)
    k = math.prod(grid)
    w = torch.randn(k, d, generator=gen)
    m, n = w.clone(), torch.full((k,), float(init_count))
    state = [t.clone().to(device) for t in (w, m, n)]
    step_t = torch.tensor([step], device=device)
    skipped = torch.zeros(1, dtype=torch.int64, device=device)
    for i in range(updates):
        x = torch.randn(batch, d, generator=gen)
        sums, counts = ref.cluster_stats(x, ref.assign(x, w)[0], k)
        ops.som_update_(*state, step_t, skipped, sums.to(device), counts.to(device), grid=grid, **kwargs)
        w, m, n = ref.som_update(w, m, n, sums, counts, grid=grid, step=step + i, **kwargs)
        for name, actual, expected in zip(("codebook", "ema_sums", "ema_counts"), state, (w, m, n)):
            assert_rel_close(actual, expected, 1e-5, f"update {i}: {name}")
    assert step_t.item() == step + updates
    assert skipped.item() == 0


GRIDS = [(24,), (8, 4), (5, 7), (3, 4, 2), (1, 24)]


@pytest.mark.parametrize("step, shrink", [(0, 0.1), (3, 1.0), (3, 0.0), (40, 0.1)])
@pytest.mark.parametrize("init_count", [0.0, 1.0])
@pytest.mark.parametrize("update_empty", [True, False], ids=["update_empty", "keep_empty"])
@pytest.mark.parametrize("grid", GRIDS, ids=str)
@pytest.mark.parametrize("neighbourhood", ops.NEIGHBOURHOODS)
def test_som_update_matches_reference(device: torch.device, neighbourhood: str, grid: tuple[int, ...],
                                      update_empty: bool, init_count: float, step: int, shrink: float) -> None:
    run_updates(device, grid, neighbourhood=neighbourhood, update_empty=update_empty, init_count=init_count,
                step=step, shrink=shrink)


@pytest.mark.parametrize("step", [0, 40])
@pytest.mark.parametrize("update_empty", [True, False], ids=["update_empty", "keep_empty"])
@pytest.mark.parametrize("grid", [(8, 4), (5, 7), (3, 4, 2), (1, 24), (64,), (16, 16)], ids=str)
@pytest.mark.parametrize("neighbourhood, sigma, base", [
    ("gaussian", 3.0, 10.0), ("gaussian", 40.0, 10.0), ("exponential", 1.0, 2.0), ("exponential", 1.0, 500.0),
])
def test_som_update_wide_stencils(device: torch.device, neighbourhood: str, sigma: float, base: float,
                                  grid: tuple[int, ...], update_empty: bool, step: int) -> None:
    # Large sigma / base: the non-zero weights reach across the whole grid.
    run_updates(device, grid, neighbourhood=neighbourhood, sigma=sigma, base=base, update_empty=update_empty,
                step=step, shrink=0.1)


@pytest.mark.parametrize("update_empty", [True, False], ids=["update_empty", "keep_empty"])
@pytest.mark.parametrize("grid, d", [((1,), 1), ((1,), 4), ((2,), 1), ((1, 1, 3), 1)], ids=str)
@pytest.mark.parametrize("neighbourhood", ops.NEIGHBOURHOODS)
def test_som_update_tiny_shapes(device: torch.device, neighbourhood: str, grid: tuple[int, ...], d: int,
                                update_empty: bool) -> None:
    run_updates(device, grid, d=d, batch=5, neighbourhood=neighbourhood, update_empty=update_empty)


def test_som_update_keep_empty_gaussian_underflow_boundary(device: torch.device) -> None:
    # Gaussian weights are never 0 in exact arithmetic, so with update_empty=False "no write" means a weight
    # that is 0 in float32. Codes 21 = (5, 2) and 2 = (2, 0) on an 8x4 grid are at squared distance 13; at
    # t = 7, tau = 1 the exponent is 13 * 8 = 104 and exp(-104) rounds to 0 in float32 (dense A), while both
    # per-axis factors exp(-72) and exp(-32) do not, so a separable stencil must not count a write here.
    grid, k = (8, 4), 32
    a = ref.neighbourhood_matrix(grid, "gaussian", step=7, shrink=1.0)
    assert a[21, 2].item() == 0.0
    w = torch.randn(k, 3, generator=generator())
    sums, counts = torch.zeros(k, 3), torch.zeros(k)
    sums[21], counts[21] = 48.0, 48.0
    state = [t.clone().to(device) for t in (w, w, torch.full((k,), 2.0))]
    ops.som_update_(*state, torch.tensor([7], device=device), torch.zeros(1, dtype=torch.int64, device=device),
                    sums.to(device), counts.to(device), grid=grid, neighbourhood="gaussian", shrink=1.0,
                    update_empty=False)
    expected = ref.som_update(w, w, torch.full((k,), 2.0), sums, counts, grid=grid, neighbourhood="gaussian",
                              step=7, shrink=1.0, update_empty=False)
    assert state[2][2].item() == 2.0, "code 2 was written through a weight that is 0 in float32"
    for name, actual, exp in zip(("codebook", "ema_sums", "ema_counts"), state, expected):
        assert_rel_close(actual, exp, 1e-5, name)


def test_som_update_accepts_zero_dim_step(device: torch.device) -> None:
    gen = generator()
    w, sums = torch.randn(12, 3, generator=gen), torch.randn(12, 3, generator=gen)
    counts = torch.randint(3, (12,), generator=gen).float()
    state = [t.clone().to(device) for t in (w, w, torch.ones(12))]
    step = torch.tensor(3, device=device)
    ops.som_update_(*state, step, torch.zeros((), dtype=torch.int64, device=device), sums.to(device),
                    counts.to(device), grid=(4, 3))
    expected = ref.som_update(w, w, torch.ones(12), sums, counts, grid=(4, 3), step=3)
    for actual, exp in zip(state, expected):
        assert_rel_close(actual, exp, 1e-5, "state")
    assert step.item() == 4


def test_som_update_empty_batch_from_zero_counts(device: torch.device) -> None:
    # N^(0) = 0 and no members: smoothing keeps N = 0, so w must stay as it is (no 0/0).
    w = torch.randn(6, 2, generator=generator())
    state = [t.clone().to(device) for t in (w, w, torch.zeros(6))]
    zeros = torch.zeros(6, 2, device=device), torch.zeros(6, device=device)
    ops.som_update_(*state, torch.zeros(1, dtype=torch.int64, device=device),
                    torch.zeros(1, dtype=torch.int64, device=device), *zeros, grid=(3, 2))
    assert torch.equal(state[0].cpu(), w)
    assert torch.equal(state[2].cpu(), torch.zeros(6))
    assert_rel_close(state[1], 0.99 * w, 1e-6, "ema_sums")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("target", ["sums", "counts"])
def test_som_update_skips_non_finite_batch(device: torch.device, target: str, value: float) -> None:
    gen = generator()
    w = torch.randn(8, 3, generator=gen)
    state = [t.to(device) for t in (w.clone(), w * 2, torch.rand(8, generator=gen) + 1)]
    before = [t.clone() for t in state]
    step = torch.tensor([5], device=device)
    skipped = torch.zeros(1, dtype=torch.int64, device=device)
    batch = {"sums": torch.randn(8, 3, generator=gen), "counts": torch.ones(8)}
    batch[target].view(-1)[3] = value
    for expected_skipped in (1, 2):
        ops.som_update_(*state, step, skipped, batch["sums"].to(device), batch["counts"].to(device), grid=(8,))
        for actual, original in zip(state, before):
            assert torch.equal(actual, original)
        assert step.item() == 5 and skipped.item() == expected_skipped
    # A finite batch afterwards is applied normally and leaves the skip count alone.
    ops.som_update_(*state, step, skipped, torch.zeros(8, 3, device=device), torch.ones(8, device=device),
                    grid=(8,))
    assert step.item() == 6 and skipped.item() == 2
