"""The paper's experiments as rerunnable sweeps (``python -m kohonen_vq.experiments`` / ``kohonen-vq sweep``).

    studies    named studies: lists of codebook configurations (Tables 1-5, ksize)
    runner     every configuration x seed as a ``kohonen-vq train`` process, N at a time, resumable
    posthoc    a finished run's model from its checkpoint, and its topography.json
    aggregate  mean ± std tables (Markdown, CSV) with the paper's definitions
    figures    Fig. 1, 2, 3, 6 and the U-matrix
    report     RESULTS.md: setup, wall time, the paper's claims checked, tables, figures
"""
from .studies import STUDIES, Config, Study, select

__all__ = ["STUDIES", "Config", "Study", "select"]
