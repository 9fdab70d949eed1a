"""kohonen_vq: Kohonen self-organising-map vector quantisation (KSOM) for neural networks.

The hot path (assignment, cluster statistics, the fused KSOM/EMA update) runs in the package's own
C++/CUDA ops, registered with the PyTorch dispatcher under ``torch.ops.kohonen_vq``.
"""
from ._native import NativeLibraryError, build_info
from . import grid, metrics, ops, topography
from .quantizers import EMAVQ, GradientSOMVQ, GradientVQ, KohonenVQ, VQOutput

__version__ = "0.1.0"
__all__ = ["EMAVQ", "GradientSOMVQ", "GradientVQ", "KohonenVQ", "NativeLibraryError", "VQOutput", "build_info",
           "grid", "metrics", "ops", "topography", "__version__"]
