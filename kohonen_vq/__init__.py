"""kohonen_vq: Kohonen self-organising-map vector quantisation (KSOM) for neural networks.

The hot path (assignment, cluster statistics, the fused KSOM/EMA update) runs in the package's own
C++/CUDA ops, registered with the PyTorch dispatcher under ``torch.ops.kohonen_vq``.
"""
from ._native import NativeLibraryError, build_info
from . import ops

__version__ = "0.1.0"
__all__ = ["NativeLibraryError", "build_info", "ops", "__version__"]
