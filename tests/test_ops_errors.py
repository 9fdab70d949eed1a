"""Bad inputs: each raises RuntimeError (from the dispatcher) whose message names the argument and states
what was expected and what was given; a failed in-place update leaves the state untouched."""
from __future__ import annotations

import re
from typing import Any, Callable

import pytest
import torch

from kohonen_vq import ops

K, D = 6, 3


def z(*shape: int, dtype: torch.dtype = torch.float32, device: str = "cpu") -> torch.Tensor:
    return torch.zeros(*shape, dtype=dtype, device=device)


def long1(device: str = "cpu", dtype: torch.dtype = torch.int64, shape: tuple[int, ...] = (1,)) -> torch.Tensor:
    return torch.zeros(shape, dtype=dtype, device=device)


def som_update(**override: Any) -> None:
    """som_update_ on a valid K = 6, D = 3 state with some arguments replaced."""
    args: dict[str, Any] = dict(codebook=z(K, D), ema_sums=z(K, D), ema_counts=z(K), step=long1(),
                                skipped=long1(), sums=z(K, D), counts=z(K), grid=(K,))
    args.update(override)
    ops.som_update_(**args)


def case(name: str, call: Callable[[], Any], pattern: str, *marks: pytest.MarkDecorator) -> Any:
    return pytest.param(call, pattern, id=name, marks=marks)


CUDA = pytest.mark.cuda

ASSIGN_CASES = [
    case("x_rank", lambda: ops.assign(z(5), z(4, 5)),
         r"'x' must be a 2-D tensor of shape (N, D), got shape [5]"),
    case("codebook_rank", lambda: ops.assign(z(5, 3), z(2, 4, 3)),
         r"'codebook' must be a 2-D tensor of shape (K, D), got shape [2, 4, 3]"),
    case("d_mismatch", lambda: ops.assign(z(5, 3), z(2, 4)),
         r"'x' has D = 3 but 'codebook' has D = 4 (x: [5, 3], codebook: [2, 4])"),
    case("x_integer", lambda: ops.assign(z(5, 3, dtype=torch.int64), z(2, 3)),
         r"'x' must have dtype float32, float16 or bfloat16, got Long"),
    case("codebook_complex", lambda: ops.assign(z(5, 3), z(2, 3, dtype=torch.complex64)),
         r"'codebook' must have dtype float32, float16 or bfloat16, got ComplexFloat"),
    case("x_float64", lambda: ops.assign(z(5, 3, dtype=torch.float64), z(2, 3)),
         r"'x' must have dtype float32, float16 or bfloat16, got Double"),
    case("k_zero", lambda: ops.assign(z(5, 3), z(0, 3)),
         r"'codebook' must hold at least one code (K >= 1), got shape [0, 3]"),
    case("d_zero", lambda: ops.assign(z(5, 0), z(2, 0)),
         r"vector dimension D must be >= 1, got codebook shape [2, 0]"),
    case("mixed_devices_meta", lambda: ops.assign(z(5, 3, device="meta"), z(2, 3)),
         r"'x' and 'codebook' must be on the same device, got meta and cpu"),
    case("mixed_devices_cuda", lambda: ops.assign(z(5, 3, device="cuda"), z(2, 3)),
         r"'x' and 'codebook' must be on the same device, got cuda:0 and cpu", CUDA),
    case("precision_unknown", lambda: ops.assign(z(5, 3), z(2, 3), precision="bf16"),
         r"argument 'precision' must be one of 'exact', 'tf32', got 'bf16'"),
    case("precision_unknown_meta", lambda: ops.assign(z(5, 3, device="meta"), z(2, 3, device="meta"),
                                                      precision="TF32"),
         r"argument 'precision' must be one of 'exact', 'tf32', got 'TF32'"),
]

CLUSTER_STATS_CASES = [
    case("x_rank", lambda: ops.cluster_stats(z(5), long1(shape=(5,)), 4),
         r"'x' must be a 2-D tensor of shape (N, D), got shape [5]"),
    case("x_integer", lambda: ops.cluster_stats(z(5, 3, dtype=torch.int32), long1(shape=(5,)), 4),
         r"'x' must have dtype float32, float16 or bfloat16, got Int"),
    case("x_complex", lambda: ops.cluster_stats(z(5, 3, dtype=torch.complex64), long1(shape=(5,)), 4),
         r"'x' must have dtype float32, float16 or bfloat16, got ComplexFloat"),
    case("x_float64", lambda: ops.cluster_stats(z(5, 3, dtype=torch.float64), long1(shape=(5,)), 4),
         r"'x' must have dtype float32, float16 or bfloat16, got Double"),
    case("d_zero", lambda: ops.cluster_stats(z(5, 0), long1(shape=(5,)), 4),
         r"vector dimension D must be >= 1, got x shape [5, 0]"),
    case("indices_float", lambda: ops.cluster_stats(z(5, 3), z(5), 4),
         r"'indices' must have dtype int64 or int32, got Float"),
    case("indices_rank", lambda: ops.cluster_stats(z(5, 3), long1(shape=(5, 1)), 4),
         r"'indices' must be a 1-D tensor of shape (N,), got shape [5, 1]"),
    case("indices_length", lambda: ops.cluster_stats(z(5, 3), long1(shape=(4,)), 4),
         r"'indices' must have shape (5,) to match x [5, 3], got [4]"),
    case("num_codes_zero", lambda: ops.cluster_stats(z(5, 3), long1(shape=(5,)), 0),
         r"'num_codes' must be >= 1, got 0"),
    case("index_negative", lambda: ops.cluster_stats(z(3, 3), torch.tensor([0, -1, 2]), 4),
         r"'indices' must lie in [0, 4), got -1"),
    case("index_too_large", lambda: ops.cluster_stats(z(3, 3), torch.tensor([0, 3, 4], dtype=torch.int32), 4),
         r"'indices' must lie in [0, 4), got 4"),
    case("mixed_devices_meta", lambda: ops.cluster_stats(z(5, 3), long1("meta", shape=(5,)), 4),
         r"'x' and 'indices' must be on the same device, got cpu and meta"),
    case("mixed_devices_cuda", lambda: ops.cluster_stats(z(5, 3, device="cuda"), long1(shape=(5,)), 4),
         r"'x' and 'indices' must be on the same device, got cuda:0 and cpu", CUDA),
]

LOOKUP_CASES = [
    case("codebook_rank", lambda: ops.lookup(z(5), long1(shape=(2,))),
         r"'codebook' must be a 2-D tensor of shape (K, D), got shape [5]"),
    case("codebook_integer", lambda: ops.lookup(z(5, 3, dtype=torch.int64), long1(shape=(2,))),
         r"'codebook' must have dtype float32, float16 or bfloat16, got Long"),
    case("indices_float", lambda: ops.lookup(z(5, 3), z(2)),
         r"'indices' must have dtype int64 or int32, got Float"),
    case("indices_rank", lambda: ops.lookup(z(5, 3), long1(shape=(2, 1))),
         r"'indices' must be a 1-D tensor of shape (N,), got shape [2, 1]"),
    case("index_too_large", lambda: ops.lookup(z(5, 3), torch.tensor([0, 5])),
         r"'indices' must lie in [0, 5), got values in [0, 5]"),
    case("index_too_large_no_check_cpu", lambda: ops.lookup(z(5, 3), torch.tensor([7, 1]), check_range=False),
         r"'indices' must lie in [0, 5), got values in [1, 7]"),
    case("mixed_devices_meta", lambda: ops.lookup(z(5, 3), long1("meta", shape=(2,))),
         r"'codebook' and 'indices' must be on the same device, got cpu and meta"),
    case("mixed_devices_cuda", lambda: ops.lookup(z(5, 3, device="cuda"), long1(shape=(2,))),
         r"'codebook' and 'indices' must be on the same device, got cuda:0 and cpu", CUDA),
]

SOM_UPDATE_CASES = [
    case("codebook_half", lambda: som_update(codebook=z(K, D, dtype=torch.float16)),
         r"'codebook' must have dtype Float, got Half"),
    case("codebook_float64", lambda: som_update(codebook=z(K, D, dtype=torch.float64)),
         r"'codebook' must have dtype Float, got Double"),
    case("codebook_rank", lambda: som_update(codebook=z(K)),
         r"'codebook' must be a 2-D tensor of shape (K, D), got shape [6]"),
    case("k_zero", lambda: som_update(codebook=z(0, D)),
         r"'codebook' must hold at least one code (K >= 1), got shape [0, 3]"),
    case("codebook_non_contiguous", lambda: som_update(codebook=z(D, K).T),
         r"'codebook' must be contiguous"),
    case("ema_sums_shape", lambda: som_update(ema_sums=z(K, D + 1)),
         r"'ema_sums' must have shape [6, 3], got [6, 4]"),
    case("ema_sums_integer", lambda: som_update(ema_sums=z(K, D, dtype=torch.int64)),
         r"'ema_sums' must have dtype Float, got Long"),
    case("ema_counts_shape", lambda: som_update(ema_counts=z(K - 1)),
         r"'ema_counts' must have shape [6], got [5]"),
    case("sums_shape", lambda: som_update(sums=z(D, K)),
         r"'sums' must have shape [6, 3], got [3, 6]"),
    case("sums_complex", lambda: som_update(sums=z(K, D, dtype=torch.complex64)),
         r"'sums' must have dtype Float, got ComplexFloat"),
    case("counts_float64", lambda: som_update(counts=z(K, dtype=torch.float64)),
         r"'counts' must have dtype Float, got Double"),
    case("step_int32", lambda: som_update(step=long1(dtype=torch.int32)),
         r"'step' must have dtype Long, got Int"),
    case("step_float", lambda: som_update(step=z(1)),
         r"'step' must have dtype Long, got Float"),
    case("step_shape", lambda: som_update(step=long1(shape=(2,))),
         r"'step' must hold exactly one element, got shape [2]"),
    case("skipped_shape", lambda: som_update(skipped=long1(shape=(0,))),
         r"'skipped' must hold exactly one element, got shape [0]"),
    case("grid_product", lambda: som_update(grid=(2, 2)),
         r"'grid' [2, 2] holds 4 nodes but the codebook has K = 6 codes"),
    case("grid_zero_axis", lambda: som_update(grid=(K, 0)),
         r"'grid' must have sizes >= 1, got [6, 0]"),
    case("grid_empty", lambda: som_update(grid=()),
         r"'grid' must list at least one axis size"),
    case("neighbourhood_unknown", lambda: som_update(neighbourhood="box"),
         r"'neighbourhood' must be one of 'none', 'hard', 'gaussian', 'exponential', got 'box'"),
    case("shrink_negative", lambda: som_update(shrink=-0.5),
         r"'shrink' must be >= 0, got -0.5"),
    case("shrink_infinite", lambda: som_update(shrink=float("inf")),
         r"'shrink' must be finite, got inf"),
    case("eps_infinite", lambda: som_update(eps=float("inf")),
         r"'eps' must be finite, got inf"),
    case("decay_one", lambda: som_update(decay=1.0),
         r"'decay' must be in [0, 1), got 1"),
    case("decay_negative", lambda: som_update(decay=-0.25),
         r"'decay' must be in [0, 1), got -0.25"),
    case("sigma_zero", lambda: som_update(sigma=0.0),
         r"'sigma' must be > 0, got 0"),
    case("sigma_negative", lambda: som_update(sigma=-2.0),
         r"'sigma' must be > 0, got -2"),
    case("base_zero", lambda: som_update(base=0.0),
         r"'base' must be > 0, got 0"),
    case("base_negative", lambda: som_update(base=-10.0),
         r"'base' must be > 0, got -10"),
    case("eps_negative", lambda: som_update(eps=-1e-5),
         r"'eps' must be >= 0, got -1e-05"),
    case("mixed_devices_meta", lambda: som_update(step=long1("meta")),
         r"'step' and 'codebook' must be on the same device, got meta and cpu"),
    case("mixed_devices_cuda", lambda: som_update(sums=z(K, D, device="cuda")),
         r"'codebook' and 'sums' must be on the same device, got cpu and cuda:0", CUDA),
]


@pytest.mark.parametrize("call, message", ASSIGN_CASES)
def test_assign_rejects(call: Callable[[], Any], message: str) -> None:
    with pytest.raises(RuntimeError, match="kohonen_vq.assign: .*" + re.escape(message)):
        call()


@pytest.mark.parametrize("call, message", CLUSTER_STATS_CASES)
def test_cluster_stats_rejects(call: Callable[[], Any], message: str) -> None:
    with pytest.raises(RuntimeError, match="kohonen_vq.cluster_stats: .*" + re.escape(message)):
        call()


@pytest.mark.parametrize("call, message", LOOKUP_CASES)
def test_lookup_rejects(call: Callable[[], Any], message: str) -> None:
    with pytest.raises(RuntimeError, match="kohonen_vq.lookup: .*" + re.escape(message)):
        call()


@pytest.mark.parametrize("call, message", SOM_UPDATE_CASES)
def test_som_update_rejects(call: Callable[[], Any], message: str) -> None:
    with pytest.raises(RuntimeError, match="kohonen_vq.som_update_: .*" + re.escape(message)):
        call()


def test_set_cpu_isa_rejects_unknown() -> None:
    with pytest.raises(RuntimeError, match="CPU instruction set 'sse9' is not available"):
        ops.set_cpu_isa("sse9")


@pytest.mark.parametrize("override", [
    dict(grid=(4,)), dict(neighbourhood="box"), dict(decay=1.5), dict(sigma=0.0), dict(base=-1.0),
    dict(shrink=-1.0), dict(counts=torch.ones(K + 1)), dict(sums=torch.ones(K, D, dtype=torch.float64)),
], ids=lambda o: next(iter(o)))
def test_failed_som_update_leaves_state_unchanged(device: torch.device, override: dict[str, Any]) -> None:
    gen = torch.Generator().manual_seed(0)
    state = dict(codebook=torch.randn(K, D, generator=gen), ema_sums=torch.randn(K, D, generator=gen),
                 ema_counts=torch.rand(K, generator=gen), step=torch.tensor([7]), skipped=torch.tensor([2]))
    state = {name: t.to(device) for name, t in state.items()}
    before = {name: t.clone() for name, t in state.items()}
    batch = dict(sums=torch.ones(K, D), counts=torch.ones(K))
    batch.update(override)
    args = {name: v.to(device) if isinstance(v, torch.Tensor) else v for name, v in batch.items()}
    with pytest.raises(RuntimeError, match="kohonen_vq.som_update_: argument"):
        ops.som_update_(**state, **{"grid": (K,), **args})
    for name, t in state.items():
        assert torch.equal(t, before[name]), name


def test_assign_rejects_more_rows_than_the_launch_grid() -> None:
    # A stride-0 view: 2^38 rows without the memory; the shared check runs before any allocation.
    rows = 128 * (2**31 - 1) + 1
    x = torch.zeros(1, 4).expand(rows, 4)
    with pytest.raises(RuntimeError, match=re.escape(f"kohonen_vq.assign: N = {rows} rows is too many")):
        ops.assign(x, torch.zeros(3, 4))
