"""`vpr sweep plan|run|evaluate`: the studies' runs."""

from __future__ import annotations

import argparse
import os

from pipeline.cli.arguments import add_jobs, add_project, add_quiet, add_studies, add_tuned_dir, studies_of


def _sweep_context(args: argparse.Namespace):
    from pipeline.execution.sweep import build_context

    return build_context(studies_of(args), params=args.params, prepared=args.prepared, runs_dir=args.runs_dir,
                         shard=args.shard, tuned_dir=args.tuned_dir)


def _sweep_plan(args: argparse.Namespace) -> int:
    from pipeline.execution.sweep import format_plan, plan_json, run_states
    from pipeline.tracking.store import Tracker

    ctx = _sweep_context(args)
    states = run_states(ctx, Tracker(ctx.tracking_uri, ctx.experiment))
    print(plan_json(ctx, states) if args.json else format_plan(ctx, states))
    return 0


def _sweep_run(args: argparse.Namespace) -> int:
    from pipeline.execution.sweep import run_sweep

    executor = None
    if args.ray:
        from pipeline.execution.ray_executor import RayExecutor

        executor = RayExecutor(args.ray, cpus=args.cpus_per_run, gpus=args.gpus_per_run)
    return run_sweep(_sweep_context(args), jobs=args.jobs, test=not args.skip_test, summary_path=args.summary,
                     plan_path=args.record_plan, executor=executor, quiet=args.quiet)


def _sweep_evaluate(args: argparse.Namespace) -> int:
    from pipeline.execution.sweep import run_sweep

    return run_sweep(_sweep_context(args), jobs=args.jobs, only_evaluate=True, summary_path=args.summary,
                     quiet=args.quiet)


def _add_common(p: argparse.ArgumentParser, shard_help: str) -> None:
    add_studies(p)
    add_project(p)
    add_tuned_dir(p)
    p.add_argument("--shard", default=None, metavar="I/N", help=shard_help)


def add_ray(p: argparse.ArgumentParser, what: str) -> None:
    """--ray ADDRESS (and the resources of one job): place `what` on a Ray cluster."""
    p.add_argument("--ray", default=os.environ.get("VPR_RAY_ADDRESS"), metavar="ADDRESS",
                   help=f"run {what} as tasks on this Ray cluster (head-host:6379, or auto; default "
                   "$VPR_RAY_ADDRESS); a dead node's task is retried on another node (pip install -e '.[ray]')")
    p.add_argument("--cpus-per-run", type=float, default=None, help="with --ray: CPUs per task (default 1)")
    p.add_argument("--gpus-per-run", type=float, default=None,
                   help="with --ray: GPUs per task; a fraction shares a GPU (default 1 on GPU clusters, else 0)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the `vpr` parser."""
    sweep = sub.add_parser("sweep", help="plan and run the studies in experiments/",
                           description="Expand study files into distinct runs (deduplicated by config hash), "
                           "and run those MLflow has not finished.")
    sweep_sub = sweep.add_subparsers(dest="sweep_command", required=True)
    plan_p = sweep_sub.add_parser("plan", help="one line per distinct run with its state",
                                  description="Expand the studies and print each distinct run: hash, state "
                                  "(new, running, interrupted, finished, failed) and the cells it serves.")
    _add_common(plan_p, "only this machine's share: the runs whose hash falls in shard I of N")
    plan_p.add_argument("--json", action="store_true",
                        help="print every run as JSON: hash, state, cells and the fully resolved config the "
                        "trainer receives")
    plan_p.set_defaults(func=_sweep_plan)

    run_p = sweep_sub.add_parser("run", help="train (and test) every unfinished run",
                                 description="Train every run not finished in MLflow, N at a time, resuming "
                                 "interrupted ones; test each on the test sets; print a summary. Exit 1 if any "
                                 "run failed, 2 on a usage or input error.")
    _add_common(run_p, "run only shard I of N (split a sweep over machines without Ray)")
    add_jobs(run_p, "runs (spread over the visible GPUs, or sharing the CPU cores)")
    run_p.add_argument("--skip-test", action="store_true", help="train only; test later with `vpr sweep evaluate`")
    add_ray(run_p, "every pending run")
    run_p.add_argument("--summary", default=None, metavar="PATH", help="write the state of every run to this JSON file")
    run_p.add_argument("--record-plan", default=None, metavar="PATH",
                       help="write the plan executed (hash, cells, resolved config per run) as JSON; "
                       "`vpr report` reads it (the DVC train stage writes data/sweep/plan.json)")
    add_quiet(run_p)
    run_p.set_defaults(func=_sweep_run)

    ev_p = sweep_sub.add_parser("evaluate", help="test every finished run not tested yet",
                                description="Evaluate the best checkpoint of each finished, untested run on its "
                                "test sets. Exit 1 if any run failed.")
    _add_common(ev_p, "test only shard I of N")
    add_jobs(ev_p, "runs tested")
    ev_p.add_argument("--summary", default=None, metavar="PATH", help="write the state of every run to this JSON file")
    add_quiet(ev_p)
    ev_p.set_defaults(func=_sweep_evaluate)
