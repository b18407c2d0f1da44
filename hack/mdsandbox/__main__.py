"""``python -m mdsandbox``: see ``mdsandbox.cli``."""

import sys

from mdsandbox.cli import main

sys.exit(main())
