"""``python -m scriptflow_trio``."""

import sys

from ._cli import main

sys.exit(main())
