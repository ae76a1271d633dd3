"""The `vpr` command: argument parsing only; the work is done by the modules it calls.

Heavy imports (torch, mlflow) happen inside the handlers so that `vpr --help` stays instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


class CliError(Exception):
    """An error to print as one clear line, with exit status 2."""


def _data_synth(args: argparse.Namespace) -> int:
    from pipeline.data.synthetic import generate

    summary = generate(Path(args.out), seed=args.seed, scale=args.scale, image_size=args.image_size,
                       gsv_cities_layout=args.gsv_cities_layout, progress=not args.quiet)
    print(json.dumps(summary, indent=2))
    return 0


def _data_check(args: argparse.Namespace) -> int:
    from pipeline.data.checks import check_dataset

    report = check_dataset(args.root, min_images_per_place=args.min_images_per_place,
                           radius=args.radius, decode_images=not args.no_decode, progress=not args.quiet)
    for problem in report.problems:
        print(problem)
    for key, counts in report.scanned.items():
        print(f"ok      {key}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    print(f"{len(report.errors)} error(s), {len(report.warnings)} warning(s) in {args.root}")
    return 0 if report.ok else 1


def _data_index(args: argparse.Namespace) -> int:
    from pipeline.data.index import write_index

    out = Path(args.out) if args.out else Path(args.root) / ".vpr-index"
    summary = write_index(args.root, out, radius=args.radius)
    print(json.dumps(summary, indent=2))
    print(f"index written to {out}")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from pipeline.prepare import prepare

    summary = prepare(args.params, args.out, progress=not args.quiet)
    print(json.dumps(summary, indent=2))
    return 0


def _train(args: argparse.Namespace) -> int:
    from pipeline.config import load_config
    from pipeline.training.trainer import train

    cfg = load_config(args.config, args.set or [])
    result = train(cfg, out_dir=Path(args.out) if args.out else None, resume=args.resume,
                   progress=not args.quiet)
    print(json.dumps(result, indent=2))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from pipeline.evaluation.from_checkpoint import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, args.dataset, out_dir=args.out, device=args.device,
                                 resize=args.resize, interpolation=args.interpolation,
                                 batch_size=args.batch_size, num_workers=args.num_workers,
                                 progress=not args.quiet)
    print(json.dumps(result, indent=2))
    return 0


def _sweep_context(args: argparse.Namespace):
    from pipeline.sweeps.runner import build_context

    return build_context(args.files, params=args.params, prepared=args.prepared, runs_dir=args.runs_dir,
                         shard=getattr(args, "shard", None))


def _sweep_plan(args: argparse.Namespace) -> int:
    from pipeline.sweeps.runner import format_plan, run_states
    from pipeline.sweeps.tracking import Tracker

    ctx = _sweep_context(args)
    print(format_plan(ctx, run_states(ctx, Tracker(ctx.tracking_uri, ctx.experiment))))
    return 0


def _sweep_run(args: argparse.Namespace) -> int:
    from pipeline.sweeps.runner import run_sweep

    if args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    return run_sweep(_sweep_context(args), jobs=args.jobs, test=not args.skip_test, summary_path=args.summary)


def _sweep_evaluate(args: argparse.Namespace) -> int:
    from pipeline.sweeps.runner import run_sweep

    return run_sweep(_sweep_context(args), jobs=args.jobs, only_evaluate=True, summary_path=args.summary)


def _tune_run(args: argparse.Namespace) -> int:
    from pipeline.sweeps.tune_runner import TuningWorkersFailed, run_tuning

    files = []
    for arg in args.studies:  # a folder means every tune_*.yaml in it
        files += sorted(Path(arg).glob("tune_*.yaml")) if Path(arg).is_dir() else [Path(arg)]
    if not files:
        raise FileNotFoundError(f"no tuning file (tune_*.yaml) in {args.studies}")
    failed = 0
    for study in files:
        try:
            run_tuning(study, workers=args.workers, storage_url=args.storage, params=args.params,
                       prepared=args.prepared, runs_dir=args.runs_dir, out_root=args.out)
        except TuningWorkersFailed as err:
            print(f"vpr: error: {err}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def _report(args: argparse.Namespace) -> int:
    from pipeline.reporting.report import write_report

    metrics = write_report(args.out, params=args.params, prepared=args.prepared, experiments=args.experiments)
    print(json.dumps(metrics, indent=2))
    return 0


def _ui(args: argparse.Namespace) -> int:
    import subprocess

    from pipeline.sweeps.tracking import default_tracking_uri

    uri = default_tracking_uri()
    print(f"MLflow UI for {uri} on http://{args.host}:{args.port}", flush=True)
    return subprocess.call([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
                            "--host", args.host, "--port", str(args.port)])


def _add_sweep_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="*", help="study files or folders (default experiments/)")
    p.add_argument("--params", default="params.yaml", help="params file selecting the profile")
    p.add_argument("--prepared", default="data/prepared", help="output of the prepare stage (dataset roots)")
    p.add_argument("--runs-dir", default="runs", help="folder of run folders runs/<hash>/")
    p.add_argument("--summary", default=None, help="write the state of every run to this JSON file")


def build_parser() -> argparse.ArgumentParser:
    """The full `vpr` argument parser (every subcommand has --help)."""
    parser = argparse.ArgumentParser(prog="vpr", description="VPR Sweep: reproducible experiment "
                                     "sweeps for visual place recognition.")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="generate, check and index datasets",
                          description="Generate the embedded datasets, check and index dataset folders.")
    data_sub = data.add_subparsers(dest="data_command", required=True)

    synth = data_sub.add_parser("synth", help="generate the embedded datasets (real layouts)",
                                description="Write procedurally generated GSV-XS, SF-XS and Tokyo-XS "
                                "datasets in the real releases' layouts. Deterministic in --seed.")
    synth.add_argument("--out", required=True, help="output folder (created; must be empty or a previous generation)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument("--scale", default="demo", help="size preset: demo, small, medium, large (default demo)")
    synth.add_argument("--image-size", type=int, default=None, help="square image side in pixels (default: the scale's)")
    synth.add_argument("--gsv-cities-layout", action="store_true",
                       help="also write the training set in the original GSV-Cities layout (Dataframes/ + Images/)")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(func=_data_synth)

    check = data_sub.add_parser("check", help="report every problem in a dataset root (read-only)",
                                description="Scan a dataset root and report all problems at once: missing "
                                "split folders, unreadable/truncated/zero-byte images, names without "
                                "coordinates, small places, queries without positives. Exit 1 on errors.")
    check.add_argument("root", help="dataset root (a split, a dataset or a folder of datasets)")
    check.add_argument("--min-images-per-place", type=int, default=4, help="minimum images of a training place (default 4)")
    check.add_argument("--radius", type=float, default=25.0, help="positive radius in metres (default 25)")
    check.add_argument("--no-decode", action="store_true", help="skip decoding images (names and layout only)")
    check.add_argument("--quiet", action="store_true", help="no progress bar")
    check.set_defaults(func=_data_check)

    index = data_sub.add_parser("index", help="write manifests and ground-truth positives",
                                description="Write a manifest per split (path, place, city, UTM) and, for "
                                "evaluation splits, each query's positives within --radius metres.")
    index.add_argument("root", help="dataset root")
    index.add_argument("--out", default=None, help="output folder (default ROOT/.vpr-index)")
    index.add_argument("--radius", type=float, default=25.0, help="positive radius in metres (default 25)")
    index.set_defaults(func=_data_index)

    prep = sub.add_parser("prepare", help="the DVC prepare stage: datasets of the selected profile",
                          description="Generate (embedded profile) or locate (real profile) the datasets, "
                          "check and index them, and write OUT/datasets.json for the later stages.")
    prep.add_argument("--params", default="params.yaml", help="params file with profile and profiles (default params.yaml)")
    prep.add_argument("--out", default="data/prepared", help="output folder (default data/prepared)")
    prep.add_argument("--quiet", action="store_true", help="no progress bars")
    prep.set_defaults(func=_prepare)

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
    evaluate.add_argument("--checkpoint", required=True, help="checkpoint file written by `vpr train`")
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
    sweep = sub.add_parser("sweep", help="plan and run the studies in experiments/",
                           description="Expand study files into distinct runs (deduplicated by config hash), "
                           "and run those MLflow has not finished.")
    sweep_sub = sweep.add_subparsers(dest="sweep_command", required=True)
    plan_p = sweep_sub.add_parser("plan", help="one line per distinct run with its state",
                                  description="Expand the studies and print each distinct run: hash, state "
                                  "(new, running, interrupted, finished, failed) and the cells it serves.")
    _add_sweep_args(plan_p)
    plan_p.add_argument("--shard", default=None, help="I/N: only this machine's share")
    plan_p.set_defaults(func=_sweep_plan)
    run_p = sweep_sub.add_parser("run", help="train (and test) every unfinished run",
                                 description="Train every run not finished in MLflow, N at a time, resuming "
                                 "interrupted ones; test each on the test sets; print a summary. Exit 1 if any failed.")
    _add_sweep_args(run_p)
    run_p.add_argument("--jobs", type=int, default=1, help="parallel runs (spread over visible GPUs)")
    run_p.add_argument("--shard", default=None, help="I/N: run only shard I of N (split a sweep over machines)")
    run_p.add_argument("--skip-test", action="store_true", help="train only; test later with `vpr sweep evaluate`")
    run_p.set_defaults(func=_sweep_run)
    ev_p = sweep_sub.add_parser("evaluate", help="test every finished run not tested yet",
                                description="Evaluate the best checkpoint of each finished, untested run on its test sets.")
    _add_sweep_args(ev_p)
    ev_p.add_argument("--jobs", type=int, default=1)
    ev_p.add_argument("--shard", default=None)
    ev_p.set_defaults(func=_sweep_evaluate)

    tune = sub.add_parser("tune", help="Optuna tuning of learning rate and weight decay per optimizer",
                          description="Tune with Optuna: one study per optimizer, pruned on per-epoch val "
                          "Recall@1, resumable, every trial an MLflow run.")
    tune_sub = tune.add_subparsers(dest="tune_command", required=True)
    tune_run = tune_sub.add_parser("run", help="run tuning files to their budget",
                                   description="Run each tuning file (experiments/tune_*.yaml) with N worker "
                                   "processes; a rerun continues to the budget. Writes OUT/<id>/best_params.json "
                                   "and figures.")
    tune_run.add_argument("studies", nargs="+", help="tuning files, or folders of tune_*.yaml (e.g. experiments)")
    tune_run.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    tune_run.add_argument("--storage", default=None,
                          help="Optuna storage URL (e.g. postgresql://...) shared by machines; default: a "
                          "JournalStorage file optuna/<id>.journal")
    tune_run.add_argument("--params", default="params.yaml")
    tune_run.add_argument("--prepared", default="data/prepared")
    tune_run.add_argument("--runs-dir", default="runs")
    tune_run.add_argument("--out", default="reports/tuning", help="output folder (default reports/tuning)")
    tune_run.set_defaults(func=_tune_run)

    report = sub.add_parser("report", help="write reports/ from the MLflow runs",
                            description="Write every study's LaTeX tables (with bootstrap CIs and ties), "
                            "published-vs-reproduced tables, figures, reports/README.md (Markdown), runs.csv, "
                            "curves.csv and metrics.json, all from the runs recorded in MLflow.")
    report.add_argument("--out", default="reports", help="output folder (default reports)")
    report.add_argument("--params", default="params.yaml", help="params file selecting the profile")
    report.add_argument("--prepared", default="data/prepared", help="output of the prepare stage (dataset roots)")
    report.add_argument("--experiments", default="experiments", help="folder of study files")
    report.set_defaults(func=_report)

    ui = sub.add_parser("ui", help="open the MLflow UI on this project's store",
                        description="Start `mlflow ui` on the project's store (or $MLFLOW_TRACKING_URI).")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(func=_ui)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `vpr` command."""
    args = build_parser().parse_args(argv)
    from pipeline.errors import USER_ERRORS

    try:
        return args.func(args)
    except USER_ERRORS as err:
        print(f"vpr: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
