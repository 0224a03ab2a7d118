"""``python -m jaxconv``: the same command line as ``jaxconv``."""

import sys

from ._cli import main

sys.exit(main())
