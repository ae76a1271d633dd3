"""`vpr prepare`: the DVC prepare stage."""

from __future__ import annotations

import argparse
import json

from pipeline import project_files
from pipeline.cli.arguments import add_quiet


def _prepare(args: argparse.Namespace) -> int:
    from pipeline.prepare import prepare

    summary = prepare(args.params, args.out, progress=not args.quiet)
    print(json.dumps(summary, indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the `vpr` parser."""
    prep = sub.add_parser("prepare", help="the DVC prepare stage: datasets of the selected profile",
                          description="Generate (embedded profile) or locate (real profile) the datasets, "
                          "check them, and write OUT/datasets.json (their roots) for the later stages.")
    prep.add_argument("--params", default=project_files.PARAMS_FILE, help=f"params file selecting the profile (default {project_files.PARAMS_FILE})")
    prep.add_argument("--out", default=project_files.PREPARED_DIR, help=f"output folder (default {project_files.PREPARED_DIR})")
    add_quiet(prep)
    prep.set_defaults(func=_prepare)
