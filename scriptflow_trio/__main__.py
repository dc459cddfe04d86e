"""``python -m scriptflow_trio``."""

from ._cli import run

run()
