"""``python -m kohonen_vq.experiments STUDY [flags] [-- TRAIN FLAGS]``: the same as ``kohonen-vq sweep``."""
import sys

from .cli import main

sys.exit(main())
