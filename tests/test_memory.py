"""assign must not materialise the N x K distance matrix (METHOD.md §2: O(N + K) extra memory)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

N, K, D = 20_000, 16_384, 64

# Peak RSS is a process-wide high-water mark, so the measurement runs in a fresh interpreter.
SCRIPT = textwrap.dedent(f"""
    import resource
    import torch
    from kohonen_vq import ops

    x, codebook = torch.randn({N}, {D}), torch.randn({K}, {D})
    ops.assign(x[:64], codebook)  # first call: thread pool and kernel set-up are not what we measure
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    indices, _ = ops.assign(x, codebook)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert indices.shape == ({N},)
    print((after - before) * 1024)  # ru_maxrss is in KiB on Linux
""")


def test_assign_peak_memory_is_far_below_n_times_k() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    growth = int(out.stdout.split()[-1])
    dense = N * K * 4
    print(f"assign N={N} K={K} D={D}: peak RSS grew by {growth / 2**20:.1f} MiB "
          f"(an N x K float32 matrix is {dense / 2**20:.0f} MiB)")
    assert growth < dense / 4
