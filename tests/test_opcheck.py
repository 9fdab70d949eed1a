"""The ops are well-formed custom ops: torch.library.opcheck (schema, fake tensors, autograd registration,
AOT dispatch) and torch.compile(fullgraph=True) of a training step that mutates module buffers."""
from __future__ import annotations

import copy
from typing import Any, Callable

import pytest
import torch

from kohonen_vq import ops


def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def randn(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=gen()).to(dtype)


def som_state(k: int, d: int) -> tuple[torch.Tensor, ...]:
    w = randn(k, d)
    return w, w.clone(), torch.ones(k), torch.tensor([3]), torch.zeros(1, dtype=torch.int64)


def som_batch(k: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    return randn(k, d), torch.randint(4, (k,), generator=gen()).float()


def sample(op: str, name: str, make_args: Callable[[], tuple[Any, ...]]) -> Any:
    """One opcheck case: the op and a callable building its positional arguments on CPU."""
    return pytest.param(op, make_args, id=f"{op}-{name}")


SAMPLES = [
    sample("assign", "f32", lambda: (randn(17, 5), randn(7, 5))),
    sample("assign", "empty_batch", lambda: (randn(0, 3), randn(4, 3))),
    sample("assign", "f16_k1", lambda: (randn(9, 2, dtype=torch.float16), randn(1, 2, dtype=torch.float16))),
    sample("assign", "bf16_strided", lambda: (randn(4, 11, dtype=torch.bfloat16).T, randn(3, 4).T.contiguous().T)),
    sample("cluster_stats", "i64", lambda: (randn(17, 5), torch.randint(7, (17,), generator=gen()), 7)),
    sample("cluster_stats", "f16_i32", lambda: (randn(17, 5, dtype=torch.float16),
                                                torch.randint(7, (17,), generator=gen(), dtype=torch.int32), 7)),
    sample("cluster_stats", "empty_batch", lambda: (randn(0, 2), torch.zeros(0, dtype=torch.int64), 3)),
    sample("lookup", "f32_i64", lambda: (randn(7, 5), torch.randint(7, (17,), generator=gen()))),
    sample("lookup", "bf16_i32_empty", lambda: (randn(3, 4, dtype=torch.bfloat16), torch.zeros(0, dtype=torch.int32))),
    sample("som_update_", "none_1d", lambda: (*som_state(12, 3), *som_batch(12, 3), [12], "none", 0.1, 1.0,
                                              10.0, 0.99, 1e-5, True)),
    sample("som_update_", "hard_2d_keep_empty", lambda: (*som_state(12, 3), *som_batch(12, 3), [4, 3], "hard",
                                                         0.1, 1.0, 10.0, 0.99, 1e-5, False)),
    sample("som_update_", "gaussian_3d", lambda: (*som_state(12, 1), *som_batch(12, 1), [2, 3, 2], "gaussian",
                                                  1.0, 2.0, 10.0, 0.9, 0.0, True)),
    sample("som_update_", "exponential_degenerate_grid", lambda: (*som_state(12, 3), *som_batch(12, 3), [1, 12],
                                                                  "exponential", 0.0, 1.0, 3.0, 0.5, 1e-5, True)),
]


def to_device(args: tuple[Any, ...], device: torch.device) -> tuple[Any, ...]:
    return tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args)


@pytest.mark.parametrize("op, make_args", SAMPLES)
def test_opcheck(device: torch.device, op: str, make_args: Callable[[], tuple[Any, ...]]) -> None:
    torch.library.opcheck(getattr(torch.ops.kohonen_vq, op).default, to_device(make_args(), device))


def test_opcheck_assign_tf32(device: torch.device) -> None:
    torch.library.opcheck(torch.ops.kohonen_vq.assign.default, to_device((randn(130, 9), randn(140, 9)), device),
                          {"precision": "tf32"})


def test_opcheck_cluster_stats_without_range_check(device: torch.device) -> None:
    args = (randn(17, 5), torch.randint(7, (17,), generator=gen()), 7)
    torch.library.opcheck(torch.ops.kohonen_vq.cluster_stats.default, to_device(args, device),
                          {"check_range": False})


class Quantiser(torch.nn.Module):
    """A minimal KSOM quantiser: the state lives in buffers that som_update_ mutates in place."""

    def __init__(self, k: int, d: int, grid: tuple[int, ...]) -> None:
        super().__init__()
        self.grid = grid
        w = randn(k, d)
        self.register_buffer("codebook", w)
        self.register_buffer("ema_sums", w.clone())
        self.register_buffer("ema_counts", torch.ones(k))
        self.register_buffer("step", torch.zeros(1, dtype=torch.int64))
        self.register_buffer("skipped", torch.zeros(1, dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        indices, sqdist = ops.assign(x, self.codebook)
        quantised = self.codebook[indices]  # read before the update, as in training
        sums, counts = ops.cluster_stats(x, indices, self.codebook.shape[0])
        ops.som_update_(self.codebook, self.ema_sums, self.ema_counts, self.step, self.skipped, sums, counts,
                        grid=self.grid)
        return quantised, indices, sqdist.mean()


def test_compile_fullgraph_matches_eager(device: torch.device) -> None:
    eager = Quantiser(32, 6, (8, 4)).to(device)
    compiled_module = copy.deepcopy(eager)
    compiled = torch.compile(compiled_module, fullgraph=True, backend="inductor")
    data = torch.Generator().manual_seed(1)
    for _ in range(4):
        x = torch.randn(50, 6, generator=data).to(device)
        (q_e, i_e, loss_e), (q_c, i_c, loss_c) = eager(x), compiled(x)
        assert torch.equal(i_c, i_e) and torch.equal(q_c, q_e)
        torch.testing.assert_close(loss_c, loss_e)
    compiled_buffers = dict(compiled_module.named_buffers())
    for name, buffer in eager.named_buffers():
        assert torch.equal(compiled_buffers[name], buffer), name
    assert eager.step.item() == 4
