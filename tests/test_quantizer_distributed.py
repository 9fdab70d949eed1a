"""Data-parallel training over 2 CPU ranks (gloo): the KSOM / EMA-VQ codebooks stay identical across ranks
and equal a single process that sees every rank's batch, starting from rank 0's initial codebook."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from kohonen_vq import metrics

sys.path.insert(0, str(Path(__file__).parent))  # the spawned ranks import the worker by module name
import _dist_worker as worker  # noqa: E402
from test_faults import Fault, fault  # noqa: E402, F401  (the fixture)

TIMEOUT_S = 120

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Runs both ranks once for all tests of this module; a hang fails instead of blocking CI."""
    tmp = tmp_path_factory.mktemp("dist")
    ctx = mp.start_processes(worker.run, args=(str(tmp / "init"), str(tmp)), nprocs=worker.WORLD_SIZE,
                             join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not ctx.join(timeout=max(deadline - time.monotonic(), 0.1)):
            if time.monotonic() > deadline:
                pytest.fail(f"distributed workers did not finish within {TIMEOUT_S} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    return [torch.load(tmp / f"rank{r}.pt") for r in range(worker.WORLD_SIZE)]


def single_process(kind: str) -> tuple[torch.nn.Module, list, list]:
    """Rank 0's initial quantiser trained on the concatenation of every rank's batch."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        vq = worker.make(kind, seed=0)
        data = [worker.batches(r) for r in range(worker.WORLD_SIZE)]
        outs = [vq(torch.cat(step)) for step in zip(*data)]
    finally:
        torch.set_num_threads(threads)
    return vq, [o.indices for o in outs], [o.perplexity for o in outs]


@pytest.mark.parametrize("kind", ["kohonen", "ema"])
def test_codebooks_identical_across_ranks(ranks: list[dict], kind: str) -> None:
    r0, r1 = ranks[0][kind], ranks[1][kind]
    assert not torch.equal(r0["initial"], r1["initial"])  # the ranks did start apart
    for name, value in r0["state"].items():
        assert torch.equal(value, r1["state"][name]), name
    assert int(r0["state"]["_step"]) == worker.STEPS


@pytest.mark.parametrize("kind", ["kohonen", "ema"])
def test_equals_single_process_on_concatenated_batches(ranks: list[dict], kind: str) -> None:
    vq, indices, perplexity = single_process(kind)
    state = ranks[0][kind]["state"]
    for name in ("codebook", "ema_sums", "ema_counts"):
        torch.testing.assert_close(state[name], getattr(vq, name), rtol=1e-5, atol=1e-5, msg=name)
    assert int(state["_step"]) == vq.step
    half = indices[0].shape[0] // worker.WORLD_SIZE
    for step, want in enumerate(indices):  # each rank's indices are its half of the single-process ones
        for r in range(worker.WORLD_SIZE):
            assert torch.equal(ranks[r][kind]["indices"][step], want[r * half:(r + 1) * half]), (step, r)
    torch.testing.assert_close(ranks[0][kind]["perplexity"], torch.stack(perplexity))
    assert not torch.allclose(state["codebook"], ranks[0][kind]["initial"])  # training moved it


@pytest.mark.parametrize("kind", ["kohonen", "ema", "gradient"])
def test_perplexity_is_global(ranks: list[dict], kind: str) -> None:
    local_differs = False
    for step in range(worker.STEPS):
        both = torch.cat([ranks[r][kind]["indices"][step] for r in range(worker.WORLD_SIZE)])
        want = metrics.perplexity(both, worker.NUM_CODES)
        for r in range(worker.WORLD_SIZE):
            torch.testing.assert_close(ranks[r][kind]["perplexity"][step], want)
        local = metrics.perplexity(ranks[0][kind]["indices"][step], worker.NUM_CODES)
        local_differs |= not torch.allclose(local, want)
    assert local_differs  # the ranks' data differ, so a rank-local perplexity would not pass


@pytest.mark.parametrize("kind", ["kohonen", "ema"])
def test_long_run_stays_bit_identical_across_ranks(ranks: list[dict], kind: str, fault: Fault) -> None:
    """400 updates from different initial codebooks and different data per rank, through a batch that is empty
    on one rank and one that holds NaN on the other: every saved state is the same on both ranks, bit for bit."""
    fault.injected("rank-local empty batch and NaN batch in a 400-step 2-rank gloo run", count=2)
    states = [ranks[r]["long"][kind] for r in range(worker.WORLD_SIZE)]
    assert len(states[0]) == len(states[1]) == worker.LONG_STEPS // worker.CHECK_EVERY
    for check, (r0, r1) in enumerate(zip(*states)):
        for name, value in r0.items():
            other = r1[name]
            same = torch.equal(value.view(torch.int32), other.view(torch.int32)) if value.is_floating_point() \
                else torch.equal(value, other)  # floats compared as bits (0.0 and -0.0 differ)
            assert same, f"{name} differs between the ranks after {(check + 1) * worker.CHECK_EVERY} steps"
    final = states[0][-1]
    assert int(final["skipped_batches"]) == 1  # the NaN batch, skipped on both ranks
    assert int(final["_step"]) == worker.LONG_STEPS - 1  # every other update, the empty batch's included
    assert final["codebook"].isfinite().all()
    assert not torch.equal(states[0][0]["codebook"], final["codebook"])  # still learning at the end
    fault.nothing_lost()
