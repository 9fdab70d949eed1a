"""Drop-in vector quantisers: KSOM and EMA-VQ (native updates) and gradient-trained baselines."""
from .base import QuantizerBase, VQOutput
from .gradient import GradientSOMVQ, GradientVQ
from .kohonen import EMAVQ, KohonenVQ

__all__ = ["EMAVQ", "GradientSOMVQ", "GradientVQ", "KohonenVQ", "QuantizerBase", "VQOutput"]
