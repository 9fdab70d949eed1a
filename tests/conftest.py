"""Shared fixtures: the ``device`` parameter and the ``cuda`` marker policy.

Tests marked ``cuda`` are skipped when no CUDA device or no CUDA kernels are available, unless
KOHONEN_VQ_REQUIRE_CUDA=1, in which case they fail: a CI job meant to exercise CUDA must not pass by
skipping everything.
"""
from __future__ import annotations

import os

import pytest
import torch

import kohonen_vq

REQUIRE_CUDA = os.environ.get("KOHONEN_VQ_REQUIRE_CUDA") == "1"


def cuda_unavailable_reason() -> str | None:
    """Why the CUDA tests cannot run here, or None if they can."""
    if not torch.cuda.is_available():
        return "torch.cuda.is_available() is False"
    if not kohonen_vq.build_info()["cuda"]:
        return "kohonen_vq was built without CUDA kernels"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("cuda") is not None and not REQUIRE_CUDA:
        reason = cuda_unavailable_reason()
        if reason is not None:
            pytest.skip(reason)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    # Fails in the call phase, so the test is reported as FAILED rather than as a setup error.
    if item.get_closest_marker("cuda") is not None and REQUIRE_CUDA:
        reason = cuda_unavailable_reason()
        if reason is not None:
            pytest.fail(f"KOHONEN_VQ_REQUIRE_CUDA=1 but {reason}", pytrace=False)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request: pytest.FixtureRequest) -> torch.device:
    """Every op test runs once per device."""
    return torch.device(request.param)


@pytest.fixture(scope="module")
def one_thread():
    """Runs a module's tests on one intra-op thread: tiny models and batches gain nothing from a second
    thread and lose seconds to wake-ups on a loaded 2-core machine. Thread-count independence of the ops
    is tested in test_ops_vs_reference."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
