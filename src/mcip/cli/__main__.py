"""``python -m mcip.cli ...`` (e.g. under ``torchrun``): the ``mcip`` command."""

import sys

from mcip.cli import main

sys.exit(main())
