"""``python -m mcip.cli ...`` (e.g. under ``torchrun``): the ``mcip`` command."""

import sys

from mcip.cli import main

if __name__ == "__main__":  # worker processes started by spawn/forkserver import this module too
    sys.exit(main())
