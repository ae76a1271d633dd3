"""`python -m pipeline.cli` = the `vpr` command."""

from pipeline.cli import run

run()
