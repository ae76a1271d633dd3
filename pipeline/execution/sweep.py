"""`vpr sweep plan|run|evaluate`: expand studies, skip what MLflow has finished, run the rest.

Runs execute in `jobs` long-lived worker processes (`pipeline.execution.executors.LocalExecutor`,
one per slot, dying with the sweep), each running run after run, or as Ray tasks. A run holds a lock on its run
folder and resumes from the folder's last checkpoint, so killing and rerunning a sweep loses
nothing finished and never duplicates a finished hash. `--shard I/N` keeps the runs whose hash
falls in shard I, so N machines split a sweep without talking to each other.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import project_files
from pipeline.data.catalog import EVAL_SPLITS, recall_metric
from pipeline.errors import UserError
from pipeline.execution.benchmarks import untested
from pipeline.execution.executors import Executor, LocalExecutor, drain
from pipeline.execution.protocol import FAILED, Outcome, RunSpec, write_spec
from pipeline.profile import benchmark_protocol, check_roots, load_benchmark_roots, load_profile
from pipeline.runs.folder import ERROR, RunFolder
from pipeline.studies.plan import PlannedRun, plan, plan_records, write_plan
from pipeline.studies.study import load_studies
from pipeline.tracking.parent_runs import study_parent_runs, study_runs_open
from pipeline.tracking.store import EXPERIMENT, STATUS_TAG, Tracker, default_tracking_uri


class SweepArgumentError(UserError):
    """A sweep command-line value is invalid (`--shard`, `--jobs`)."""


@dataclass
class SweepContext:
    """Everything a sweep command needs, resolved from the CLI arguments."""

    planned: list[PlannedRun]
    profile_name: str
    runs_dir: Path
    tracking_uri: str
    experiment: str = EXPERIMENT
    jobs: int = 1
    # The evaluate stage's benchmarks: per run hash the benchmark keys its studies ask for, the
    # folders the profile provides, and the protocol.
    benchmarks_of: dict[str, list[str]] = field(default_factory=dict)
    benchmark_roots: dict[str, str] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'I/N' -> (I, N) with 0 <= I < N."""
    if not text:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise SweepArgumentError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise SweepArgumentError(f"--shard {text}: need N >= 1 and 0 <= I < N")
    return i, n


def in_shard(config_hash: str, shard: tuple[int, int] | None) -> bool:
    """True when the run `config_hash` belongs to `shard` (all runs without a shard)."""
    return shard is None or int(config_hash, 16) % shard[1] == shard[0]


def build_context(files: list[str], params: str = "params.yaml", prepared: str = "data/prepared",
                  runs_dir: str = "runs", tracking_uri: str | None = None,
                  shard: str | None = None, tuned_dir: str = project_files.TUNED_VALUES_DIR) -> SweepContext:
    """Load the profile, the prepared roots and the studies; plan (and shard) the runs."""
    name, profile = load_profile(params)
    roots = check_roots(prepared, params)
    studies = load_studies(files or ["experiments"])
    planned = [p for p in plan(studies, profile, roots, tuned_dir) if in_shard(p.config_hash, parse_shard(shard))]
    asked = {s.id: s.benchmarks for s in studies}
    benchmarks_of = {p.config_hash: sorted({k for s in p.studies for k in asked[s]}) for p in planned}
    return SweepContext(planned, name, Path(runs_dir), tracking_uri or default_tracking_uri(),
                        benchmarks_of=benchmarks_of, benchmark_roots=load_benchmark_roots(prepared),
                        protocol=benchmark_protocol(profile).model_dump())


def run_states(ctx: SweepContext, tracker: Tracker, by_hash: dict[str, Any] | None = None) -> dict[str, str]:
    """State per hash: finished, failed, running (a live worker), interrupted, or new."""
    by_hash = tracker.runs_by_hash() if by_hash is None else by_hash
    states = {}
    for p in ctx.planned:
        run = by_hash.get(p.config_hash)
        status = run.data.tags.get(STATUS_TAG, "new") if run else "new"
        if RunFolder(ctx.runs_dir / p.config_hash).is_locked():
            status = "running"
        elif status == "running":
            status = "interrupted"  # tagged running but no process holds it: killed
        states[p.config_hash] = status
    return states


def format_plan(ctx: SweepContext, states: dict[str, str]) -> str:
    """One line per distinct run: hash, state, studies it serves, and its labels."""
    lines = [f"{'hash':12s}  {'state':11s}  studies / cells"]
    for p in ctx.planned:
        labels = "; ".join(sorted({f"{c.study}: {c.label}" + (f" (seed {c.seed})" if c.seed else "")
                                   for c in p.cells}))
        lines.append(f"{p.config_hash:12s}  {states[p.config_hash]:11s}  {labels}")
    counts: dict[str, int] = {}
    for s in states.values():
        counts[s] = counts.get(s, 0) + 1
    lines.append(f"{len(ctx.planned)} distinct runs: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    return "\n".join(lines)


def plan_json(ctx: SweepContext, states: dict[str, str]) -> str:
    """The plan as JSON (`vpr sweep plan --json`): per run its hash, state, cells and resolved config."""
    runs = [{"config_hash": r["config_hash"], "state": states[r["config_hash"]], "cells": r["cells"],
             "config": r["config"]} for r in plan_records(ctx.planned)]
    return json.dumps({"profile": ctx.profile_name, "runs": runs}, indent=1)


def _todo(ctx: SweepContext, tracker: Tracker, only_evaluate: bool) -> dict[str, tuple[PlannedRun, bool, list[str]]]:
    """{hash: (planned run, test it on its test sets?, benchmarks to test it on)} of the runs to
    execute (not finished, not running) or, with only_evaluate, to test: finished runs not tested
    yet, or not on every benchmark their studies ask for that the profile provides."""
    by_hash = tracker.runs_by_hash()
    states = run_states(ctx, tracker, by_hash)
    todo = {}
    for p in ctx.planned:
        state = states[p.config_hash]
        if only_evaluate:
            run = by_hash.get(p.config_hash)
            if state != "finished" or run is None:
                continue
            test = run.data.tags.get("vpr.tested") != "1"
            available = [k for k in ctx.benchmarks_of.get(p.config_hash, []) if k in ctx.benchmark_roots]
            benchmarks = untested(run, available)
            if test or benchmarks:
                todo[p.config_hash] = (p, test, benchmarks)
        elif state not in ("finished", "running"):
            todo[p.config_hash] = (p, True, [])
    return todo


def run_sweep(ctx: SweepContext, jobs: int = 1, test: bool = True, only_evaluate: bool = False,
              summary_path: str | Path | None = None, plan_path: str | Path | None = None,
              executor: Executor | None = None, quiet: bool = False) -> int:
    """Execute every planned run that is not finished (or, with only_evaluate, test finished ones).

    `executor`: where runs execute (default: `jobs` local worker processes; `RayExecutor` for a
    cluster). `plan_path`: record the plan executed (`pipeline.studies.plan.write_plan`) for the
    report. The studies' parent runs are RUNNING meanwhile and end with the sweep, however it ends
    (`study_runs_open`). Returns 1 when a run failed, else 0.
    """
    if jobs < 1:
        raise SweepArgumentError(f"--jobs must be >= 1, got {jobs}")
    ctx.jobs = jobs
    hashes_by_study = {s: [p.config_hash for p in ctx.planned if s in p.studies]
                       for p in ctx.planned for s in p.studies}
    with study_runs_open(ctx.tracking_uri, ctx.experiment, hashes_by_study):
        outcomes = _execute(ctx, test, only_evaluate, plan_path, executor, quiet)
    return _summarize(ctx, outcomes, summary_path, quiet)


def _execute(ctx: SweepContext, test: bool, only_evaluate: bool, plan_path: str | Path | None,
             executor: Executor | None, quiet: bool) -> dict[str, Outcome]:
    prestart = executor is None and not only_evaluate  # training nearly always has work
    executor = executor or LocalExecutor(ctx.jobs, ctx.tracking_uri)
    outcomes: dict[str, Outcome] = {}
    try:
        if prestart:  # the workers warm up while this plans
            executor.start()
        tracker = Tracker(ctx.tracking_uri, ctx.experiment)
        tracker.ensure_experiment()  # the experiment exists before a worker records a run in it
        if plan_path:
            write_plan(ctx.planned, plan_path, ctx.profile_name)
        parents = study_parent_runs(tracker, sorted({s for p in ctx.planned for s in p.studies}))
        todo = _todo(ctx, tracker, only_evaluate)
        unprovided = sorted({k for keys in ctx.benchmarks_of.values() for k in keys} - set(ctx.benchmark_roots))
        if only_evaluate and unprovided:  # asked for by a study, but the profile has no folder for them
            print(f"not tested (no folder in the profile's benchmarks: section): {', '.join(unprovided)}", flush=True)
        print(f"{len(ctx.planned)} distinct runs, {len(todo)} to {'test' if only_evaluate else 'execute'}, "
              f"{executor.describe()}; MLflow store {ctx.tracking_uri}", flush=True)
        start = time.time()

        def done(key: str, outcome: Outcome) -> None:
            outcomes[key] = outcome
            if not quiet or outcome == FAILED:
                labels = ", ".join(c.label for c in todo[key][0].cells[:2])
                print(f"[{len(outcomes)}/{len(todo)}] {key} {outcome} ({labels}) after {time.time() - start:.0f} s",
                      flush=True)

        jobs = [(h, write_spec(run_spec(ctx, p, parents, test and tests, only_evaluate, benchmarks),
                               RunFolder(ctx.runs_dir / h).spec))
                for h, (p, tests, benchmarks) in todo.items()]
        drain(executor, jobs, done)
    finally:
        executor.close()
    return outcomes


def _summarize(ctx: SweepContext, outcomes: dict[str, Outcome], summary_path: str | Path | None, quiet: bool) -> int:
    """Print the summary table, write the summary file; 1 if any run failed."""
    tracker = Tracker(ctx.tracking_uri, ctx.experiment)
    if not quiet:
        print(summary_table(ctx, tracker))
    if summary_path:
        Path(summary_path).parent.mkdir(parents=True, exist_ok=True)
        Path(summary_path).write_text(json.dumps({"runs": len(ctx.planned), "states": run_states(ctx, tracker)},
                                                 indent=2, sort_keys=True))
    failed = [h for h, o in outcomes.items() if o == FAILED]
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(failed)} (errors in runs/<hash>/{ERROR} and MLflow)")
    return 1 if failed else 0


def run_spec(ctx: SweepContext, p: PlannedRun, parents: dict[str, str], test: bool, only_evaluate: bool,
             benchmarks: list[str] = ()) -> RunSpec:
    """What a worker needs to execute (or test) one planned run."""
    return RunSpec(config=p.config.to_dict(), config_hash=p.config_hash, run_dir=str(ctx.runs_dir / p.config_hash),
                   tracking_uri=ctx.tracking_uri, experiment=ctx.experiment, studies=list(p.studies),
                   labels=[f"{c.study}: {c.label}" for c in p.cells], parent_run_id=parents[p.studies[0]],
                   profile=ctx.profile_name, test=test, only_evaluate=only_evaluate,
                   benchmarks={k: ctx.benchmark_roots[k] for k in benchmarks}, protocol=ctx.protocol)


def summary_table(ctx: SweepContext, tracker: Tracker) -> str:
    """Markdown table of every planned run's state and headline metrics, from MLflow."""
    by_hash = tracker.runs_by_hash()
    titles = " | ".join(f"{s.title} R@1" for s in EVAL_SPLITS)
    rows = [f"| hash | state | cell | {titles} |", "|---|---|---|" + "---:|" * len(EVAL_SPLITS)]
    for p in ctx.planned:
        run = by_hash.get(p.config_hash)
        m = run.data.metrics if run else {}
        state = run.data.tags.get(STATUS_TAG, "new") if run else "new"
        values = [m.get(recall_metric(s.key, 1)) for s in EVAL_SPLITS]
        cells = " | ".join("-" if v is None else f"{v:.1f}" for v in values)
        rows.append(f"| {p.config_hash} | {state} | {p.cells[0].study}: {p.cells[0].label} | {cells} |")
    return "\n".join(rows)
