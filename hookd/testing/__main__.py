"""``python -m hookd.testing``: the simulator standalone (see :mod:`hookd.testing.standalone`)."""

import sys

from hookd.testing.standalone import main

if __name__ == "__main__":
    sys.exit(main())
