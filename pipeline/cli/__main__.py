"""`python -m pipeline.cli` = the `vpr` command."""

from pipeline.cli import entry_point

entry_point()
