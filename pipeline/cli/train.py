"""`vpr train`: one run from a config file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.cli.arguments import add_quiet


def _train(args: argparse.Namespace) -> int:
    from pipeline.config import load_config
    from pipeline.training.trainer import train

    cfg = load_config(args.config, args.set or [])
    result = train(cfg, out_dir=Path(args.out) if args.out else None, resume=args.resume,
                   progress=not args.quiet)
    print(json.dumps(result, indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the `vpr` parser."""
    train = sub.add_parser("train", help="train one run from a config file",
                           description="Train one run: P places x K images per batch, per-epoch "
                           "validation, best and last checkpoints, resumable.")
    train.add_argument("--config", default=None, help="run config YAML (default: the GSV-Cities ResNet-18 recipe)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a config value, e.g. --set training.epochs=3 (repeatable)")
    train.add_argument("--out", default=None, help="run folder (default runs/<config hash>)")
    train.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    add_quiet(train)
    train.set_defaults(func=_train)
