"""Where a run executes: device, torch.distributed process group (torchrun), seeding, stop signals."""
from __future__ import annotations

import contextlib
import os
import random
import signal
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist

from .. import build_info


@dataclass(frozen=True)
class Runtime:
    """This process's place in the job: rank 0 of 1 unless started by torchrun (WORLD_SIZE > 1)."""

    rank: int
    world_size: int
    device: torch.device
    owns_process_group: bool

    @property
    def is_main(self) -> bool:
        """Rank 0: the only rank that writes the run folder and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() and build_info()["cuda"] else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: torch.cuda.is_available() is False")
        if not build_info()["cuda"]:
            raise ValueError(f"--device {name}: kohonen_vq was built without CUDA kernels (rebuild with nvcc present)")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return device


def init_runtime(device: str) -> Runtime:
    """Picks the device and, under torchrun, joins the process group (NCCL on CUDA, gloo on CPU) from the
    environment (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE), unless the caller already has one."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    dev = _device(device, int(os.environ.get("LOCAL_RANK", "0")))
    if world_size <= 1:
        return Runtime(0, 1, dev, owns_process_group=False)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", device_id=dev if dev.type == "cuda" else None)
    return Runtime(dist.get_rank(), dist.get_world_size(), dev, owns_process_group=owns)


def shutdown(runtime: Runtime) -> None:
    """Leaves the process group if :func:`init_runtime` created it."""
    if runtime.owns_process_group and dist.is_initialized():
        dist.destroy_process_group()


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and torch (every device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``threads`` (None: unchanged) for the duration."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def deterministic(device: torch.device) -> Iterator[None]:
    """Deterministic algorithms on CPU, where they cost nothing; on CUDA they would need
    CUBLAS_WORKSPACE_CONFIG and forbid the atomics-based index_add_, so CUDA runs are not bit-reproducible."""
    before = torch.are_deterministic_algorithms_enabled()
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


class StopSignals:
    """Turns SIGINT / SIGTERM into a request to stop after the current step (a second SIGINT aborts at once).

    Under torch.distributed the ranks agree (all-reduce) so all of them stop at the same step: a rank that
    left the loop alone would leave the others waiting in a collective forever.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        with contextlib.suppress(ValueError):  # not the main thread: no handlers, Ctrl-C works as usual
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def requested(self, runtime: Runtime) -> bool:
        """Whether any rank received a signal (one small all-reduce per call when distributed)."""
        if not runtime.distributed:
            return self.received is not None
        flag = torch.tensor([0 if self.received is None else self.received], device=runtime.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        received = int(flag.item())  # one device sync
        if self.received is None and received:
            self.received = received
        return bool(received)
