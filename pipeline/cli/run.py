"""`vpr train` and `vpr evaluate`: one run, one checkpoint."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _train(args: argparse.Namespace) -> int:
    from pipeline.config import load_config
    from pipeline.training.trainer import train

    cfg = load_config(args.config, args.set or [])
    result = train(cfg, out_dir=Path(args.out) if args.out else None, resume=args.resume,
                   progress=not args.quiet)
    print(json.dumps(result, indent=2))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import tempfile

    from pipeline.evaluation.from_checkpoint import evaluate_checkpoint

    if args.run:  # the run's MLflow model (runs:/RUN_ID/model) from the store, as a checkpoint file
        from pipeline.sweeps.mlflow_records import checkpoint_from_run

        args.checkpoint = checkpoint_from_run(args.run, Path(tempfile.mkdtemp(prefix="vpr-run-")) / "model.pt")
    result = evaluate_checkpoint(args.checkpoint, args.dataset, out_dir=args.out, device=args.device,
                                 resize=args.resize, interpolation=args.interpolation,
                                 batch_size=args.batch_size, num_workers=args.num_workers,
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
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=_train)

    evaluate = sub.add_parser("evaluate", help="evaluate a checkpoint on an evaluation split",
                              description="Extract descriptors, exact kNN, Recall@N; saves per-query predictions.")
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="checkpoint file written by `vpr train`")
    source.add_argument("--run", metavar="RUN_ID", help="MLflow run id: its logged model runs:/RUN_ID/model "
                        "(store: $MLFLOW_TRACKING_URI or the project's mlflow.db)")
    evaluate.add_argument("--dataset", required=True, help="evaluation split folder (with database/ and queries/)")
    evaluate.add_argument("--out", default=None, help="folder for summary.json and predictions.npz")
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    evaluate.add_argument("--resize", type=int, nargs=2, default=None, metavar=("H", "W"),
                          help="resize policy (default: the run config's evaluation.resize)")
    evaluate.add_argument("--interpolation", default=None, help="bilinear, bicubic, nearest, lanczos")
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--num-workers", type=int, default=0)
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    evaluate.set_defaults(func=_evaluate)
