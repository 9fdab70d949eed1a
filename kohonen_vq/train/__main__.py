"""``python -m kohonen_vq.train [flags]``: the same as ``kohonen-vq train [flags]``."""
import sys

from ..cli import main

sys.exit(main(["train", *sys.argv[1:]]))
