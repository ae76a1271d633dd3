"""`python -m pipeline.cli` = the `vpr` command."""

import sys

from pipeline.cli import main

sys.exit(main())
