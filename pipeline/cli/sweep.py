"""`vpr sweep plan|run|evaluate`: the studies' runs."""

from __future__ import annotations

import argparse
import os


def _sweep_context(args: argparse.Namespace):
    from pipeline.sweeps.runner import build_context

    return build_context(args.files, params=args.params, prepared=args.prepared, runs_dir=args.runs_dir,
                         shard=getattr(args, "shard", None))


def _sweep_plan(args: argparse.Namespace) -> int:
    from pipeline.sweeps.runner import format_plan, plan_json, run_states
    from pipeline.sweeps.tracking import Tracker

    ctx = _sweep_context(args)
    states = run_states(ctx, Tracker(ctx.tracking_uri, ctx.experiment))
    print(plan_json(ctx, states) if args.json else format_plan(ctx, states))
    return 0


def _sweep_run(args: argparse.Namespace) -> int:
    from pipeline.sweeps.runner import check_jobs, run_sweep
    from pipeline.sweeps.tracking import study_runs_open

    check_jobs(args.jobs)  # before planning: a wrong flag fails at once
    executor = None
    if args.ray:
        from pipeline.sweeps.ray_executor import RayExecutor

        executor = RayExecutor(args.ray, cpus=args.cpus_per_run, gpus=args.gpus_per_run)
    ctx = _sweep_context(args)
    studies = {s: [p.config_hash for p in ctx.planned if s in p.studies] for p in ctx.planned for s in p.studies}
    with study_runs_open(ctx.tracking_uri, ctx.experiment, studies):  # parents end with the sweep
        return run_sweep(ctx, jobs=args.jobs, test=not args.skip_test, summary_path=args.summary,
                         plan_path=args.record_plan, executor=executor)


def _sweep_evaluate(args: argparse.Namespace) -> int:
    from pipeline.sweeps.runner import run_sweep

    return run_sweep(_sweep_context(args), jobs=args.jobs, only_evaluate=True, summary_path=args.summary)


def _add_sweep_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="*", help="study files or folders (default experiments/)")
    p.add_argument("--params", default="params.yaml", help="params file selecting the profile")
    p.add_argument("--prepared", default="data/prepared", help="output of the prepare stage (dataset roots)")
    p.add_argument("--runs-dir", default="runs", help="folder of run folders runs/<hash>/")
    p.add_argument("--summary", default=None, help="write the state of every run to this JSON file")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the `vpr` parser."""
    sweep = sub.add_parser("sweep", help="plan and run the studies in experiments/",
                           description="Expand study files into distinct runs (deduplicated by config hash), "
                           "and run those MLflow has not finished.")
    sweep_sub = sweep.add_subparsers(dest="sweep_command", required=True)
    plan_p = sweep_sub.add_parser("plan", help="one line per distinct run with its state",
                                  description="Expand the studies and print each distinct run: hash, state "
                                  "(new, running, interrupted, finished, failed) and the cells it serves.")
    _add_sweep_args(plan_p)
    plan_p.add_argument("--shard", default=None, help="I/N: only this machine's share")
    plan_p.add_argument("--json", action="store_true",
                        help="print every run as JSON: hash, state, cells and the fully resolved config the "
                        "trainer receives")
    plan_p.set_defaults(func=_sweep_plan)
    run_p = sweep_sub.add_parser("run", help="train (and test) every unfinished run",
                                 description="Train every run not finished in MLflow, N at a time, resuming "
                                 "interrupted ones; test each on the test sets; print a summary. Exit 1 if any failed.")
    _add_sweep_args(run_p)
    run_p.add_argument("--jobs", type=int, default=1, help="parallel runs (spread over visible GPUs)")
    run_p.add_argument("--shard", default=None, help="I/N: run only shard I of N (split a sweep over machines)")
    run_p.add_argument("--skip-test", action="store_true", help="train only; test later with `vpr sweep evaluate`")
    run_p.add_argument("--ray", default=os.environ.get("VPR_RAY_ADDRESS"), metavar="ADDRESS",
                       help="run every pending run as a task on this Ray cluster (head-host:6379, or auto; default $VPR_RAY_ADDRESS); "
                       "a dead node's run is retried on another node (pip install -e '.[ray]')")
    run_p.add_argument("--cpus-per-run", type=float, default=None, help="with --ray: CPUs per run (default 1)")
    run_p.add_argument("--gpus-per-run", type=float, default=None,
                       help="with --ray: GPUs per run; a fraction shares a GPU (default 1 on GPU clusters, else 0)")
    run_p.add_argument("--record-plan", default=None, metavar="PATH",
                       help="write the plan executed (hash, cells, resolved config per run) as JSON; "
                       "`vpr report` reads it (the DVC train stage writes data/sweep/plan.json)")
    run_p.set_defaults(func=_sweep_run)
    ev_p = sweep_sub.add_parser("evaluate", help="test every finished run not tested yet",
                                description="Evaluate the best checkpoint of each finished, untested run on its test sets.")
    _add_sweep_args(ev_p)
    ev_p.add_argument("--jobs", type=int, default=1)
    ev_p.add_argument("--shard", default=None)
    ev_p.set_defaults(func=_sweep_evaluate)
