"""kohonen_vq.ops.lookup: codebook[indices] behind an op boundary, on CPU and CUDA."""
from __future__ import annotations

import pytest
import torch

from kohonen_vq import ops


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("index_dtype", [torch.int64, torch.int32])
@pytest.mark.parametrize("shape", [(0, 3, 4), (1, 1, 1), (1000, 7, 64), (333, 513, 3)], ids=str)
def test_lookup_matches_indexing(device: torch.device, shape: tuple[int, int, int], index_dtype: torch.dtype,
                                 dtype: torch.dtype) -> None:
    n, k, d = shape
    gen = generator(n + k + d)
    codebook = torch.randn(k, d, generator=gen).to(dtype)
    indices = torch.randint(k, (n,), generator=gen, dtype=index_dtype)
    codes = ops.lookup(codebook.to(device), indices.to(device))
    assert codes.dtype == dtype and codes.shape == (n, d) and codes.device.type == device.type
    assert torch.equal(codes.cpu(), codebook[indices.long()])


def test_lookup_non_contiguous(device: torch.device) -> None:
    gen = generator(1)
    codebook = torch.randn(9, 40, generator=gen).T.contiguous().T  # column-major
    indices = torch.randint(9, (200,), generator=gen)[::2]
    assert not codebook.is_contiguous() and not indices.is_contiguous()
    assert torch.equal(ops.lookup(codebook.to(device), indices.to(device)).cpu(), codebook[indices])


def test_lookup_is_a_copy(device: torch.device) -> None:
    codebook = torch.ones(4, 3, device=device)
    codes = ops.lookup(codebook, torch.tensor([2, 2], device=device))
    codebook.add_(1)  # an in-place update afterwards leaves the looked-up codes as they were
    assert torch.equal(codes.cpu(), torch.ones(2, 3))


def test_lookup_rejects_out_of_range_indices(device: torch.device) -> None:
    with pytest.raises(RuntimeError, match=r"kohonen_vq.lookup: argument 'indices' must lie in \[0, 4\), "
                                           r"got values in \[-1, 2\]"):
        ops.lookup(torch.ones(4, 3, device=device), torch.tensor([2, -1], device=device))


@pytest.mark.cuda
def test_lookup_cuda_without_range_check_gives_nan_rows() -> None:
    codebook = torch.arange(8.0).view(4, 2).cuda()
    codes = ops.lookup(codebook, torch.tensor([1, 4, -3, 0], device="cuda"), check_range=False)
    assert torch.equal(codes[[0, 3]].cpu(), torch.tensor([[2.0, 3.0], [0.0, 1.0]]))
    assert codes[[1, 2]].isnan().all()


def test_lookup_under_torch_compile(device: torch.device) -> None:
    codebook, indices = torch.randn(6, 5, device=device), torch.tensor([5, 0, 3], device=device)
    compiled = torch.compile(lambda w, i: ops.lookup(w, i, check_range=False), fullgraph=True, backend="eager")
    assert torch.equal(compiled(codebook, indices), codebook[indices])
