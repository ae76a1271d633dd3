"""`vpr evaluate`: one checkpoint (or one recorded run) on one evaluation split."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from pipeline.cli.arguments import add_quiet, deprecated, positive_int


def _evaluate(args: argparse.Namespace) -> int:
    from pipeline.evaluation.from_checkpoint import evaluate_checkpoint

    if args.run:  # the run's MLflow model (runs:/RUN_ID/model) from the store, as a checkpoint file
        from pipeline.tracking.records import checkpoint_from_run

        args.checkpoint = checkpoint_from_run(args.run, Path(tempfile.mkdtemp(prefix="vpr-run-")) / "model.pt")
    result = evaluate_checkpoint(args.checkpoint, args.dataset, out_dir=args.out, device=args.device,
                                 resize=args.resize, interpolation=args.interpolation,
                                 batch_size=args.batch_size, num_workers=args.loader_workers,
                                 progress=not args.quiet)
    print(json.dumps(result, indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the `vpr` parser."""
    evaluate = sub.add_parser("evaluate", help="evaluate a checkpoint on an evaluation split",
                              description="Extract descriptors, exact kNN, Recall@N; saves per-query predictions.")
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="checkpoint file written by `vpr train`")
    source.add_argument("--run", metavar="RUN_ID", help="MLflow run id: its logged model runs:/RUN_ID/model "
                        "(store: $MLFLOW_TRACKING_URI or the project's mlflow.db)")
    evaluate.add_argument("--dataset", required=True, help="evaluation split folder (with database/ and queries/)")
    evaluate.add_argument("--out", default=None, help="folder for the result: its summary and per-query predictions")
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    evaluate.add_argument("--resize", type=int, nargs=2, default=None, metavar=("H", "W"),
                          help="resize policy (default: the run config's evaluation.resize)")
    evaluate.add_argument("--interpolation", default=None,
                          help="bilinear, bicubic, nearest or lanczos (default: the run config's)")
    evaluate.add_argument("--batch-size", type=positive_int, default=64, help="images per batch (default 64)")
    evaluate.add_argument("--loader-workers", type=int, default=0, metavar="N",
                          help="data-loading processes, as data.num_workers in a run config (default 0: in process)")
    add_quiet(evaluate)
    deprecated(evaluate, "--num-workers", "--loader-workers", "loader_workers", type=int)
    evaluate.set_defaults(func=_evaluate)
