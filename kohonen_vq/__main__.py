"""``python -m kohonen_vq train|demo|info``: the same as the ``kohonen-vq`` command."""
import sys

from .cli import main

sys.exit(main())
