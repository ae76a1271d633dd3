"""`vpr config show STUDY LABEL`: the fully resolved config of one study cell."""

from __future__ import annotations

import argparse

from pipeline import project_files
from pipeline.cli.arguments import add_project, add_tuned_dir, deprecated


def _config_show(args: argparse.Namespace) -> int:
    import yaml

    from pipeline.studies.plan import resolve_cell

    cell = resolve_cell(args.study, args.label, seed=args.seed, params=args.params, prepared=args.prepared,
                        experiments=getattr(args, "experiments", project_files.STUDIES_DIR), tuned_dir=args.tuned_dir)
    print(f"# {cell.study}: {cell.label} (seed {cell.seed}), config hash {cell.config_hash}")
    print(yaml.safe_dump(cell.config.to_dict(), sort_keys=False), end="")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the `vpr` parser."""
    config = sub.add_parser("config", help="inspect run configs",
                            description="Show the configs the sweep resolves for study cells.")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    show = config_sub.add_parser("show", help="one study cell's resolved config as YAML",
                                 description="Print the fully resolved config of one cell (the config the "
                                 "trainer receives under the selected profile), with its hash.")
    show.add_argument("study", help=f"study file, or a study id in {project_files.STUDIES_DIR}/ (e.g. s004_table3_losses)")
    show.add_argument("label", help="cell label as in `vpr sweep plan` (e.g. 'triplet')")
    show.add_argument("--seed", type=int, default=None, help="seed of the cell (default: the study's first)")
    add_project(show, runs_dir=False)
    add_tuned_dir(show)
    deprecated(show, "--experiments", "a study file path as STUDY", "experiments")
    deprecated(show, "--tuned", "--tuned-dir", "tuned_dir")
    show.set_defaults(func=_config_show)
