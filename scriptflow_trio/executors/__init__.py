"""Executors: where attempts run. The public names are re-exported by the package."""
