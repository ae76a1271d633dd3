"""`vpr sweep plan|run|evaluate`: expand studies, skip what MLflow has finished, run the rest.

Each run executes in its own child process (`python -m pipeline.sweeps.worker SPEC`), at most
`jobs` at a time. Children die with the sweep (PR_SET_PDEATHSIG), hold a lock on their run folder,
and resume from the folder's last checkpoint, so killing and rerunning a sweep loses nothing
finished and never duplicates a finished hash. `--shard I/N` keeps the runs whose hash falls in
shard I, so N machines split a sweep without talking to each other.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.prepare import load_profile
from pipeline.sweeps.execute import is_locked
from pipeline.sweeps.study import PlannedRun, load_studies, plan
from pipeline.sweeps.tracking import EXPERIMENT, STATUS_TAG, Tracker, default_tracking_uri, study_parent_runs


@dataclass
class SweepContext:
    """Everything a sweep command needs, resolved from the CLI arguments."""

    planned: list[PlannedRun]
    profile_name: str
    runs_dir: Path
    tracking_uri: str
    experiment: str = EXPERIMENT
    jobs: int = 1


def load_roots(prepared: str | Path) -> dict[str, str] | None:
    """Dataset roots written by the prepare stage, or None when it has not run."""
    path = Path(prepared) / "datasets.json"
    return json.loads(path.read_text())["roots"] if path.exists() else None


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'I/N' -> (I, N) with 0 <= I < N."""
    if not text:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"--shard {text}: need N >= 1 and 0 <= I < N")
    return i, n


def in_shard(config_hash: str, shard: tuple[int, int] | None) -> bool:
    return shard is None or int(config_hash, 16) % shard[1] == shard[0]


def build_context(files: list[str], params: str = "params.yaml", prepared: str = "data/prepared",
                  runs_dir: str = "runs", tracking_uri: str | None = None,
                  shard: str | None = None) -> SweepContext:
    """Load the profile, the prepared roots and the studies; plan (and shard) the runs."""
    name, profile = load_profile(params)
    roots = load_roots(prepared)
    if roots is None:
        raise FileNotFoundError(f"{Path(prepared) / 'datasets.json'} not found: run `vpr prepare` "
                                "(the DVC prepare stage) first")
    missing = [f"roots.{k} = '{v}'" for k, v in roots.items() if not Path(v).is_dir()]
    if missing:
        raise FileNotFoundError(f"{Path(prepared) / 'datasets.json'}: dataset root(s) not found: "
                                f"{', '.join(missing)}; rerun `vpr prepare` or fix the profile in {params}")
    studies = load_studies(files or ["experiments"])
    planned = [p for p in plan(studies, profile, roots) if in_shard(p.config_hash, parse_shard(shard))]
    return SweepContext(planned, name, Path(runs_dir), tracking_uri or default_tracking_uri())


def run_states(ctx: SweepContext, tracker: Tracker, by_hash: dict[str, Any] | None = None) -> dict[str, str]:
    """State per hash: finished, failed, running (a live worker), interrupted, or new."""
    by_hash = tracker.runs_by_hash() if by_hash is None else by_hash
    states = {}
    for p in ctx.planned:
        run = by_hash.get(p.config_hash)
        status = run.data.tags.get(STATUS_TAG, "new") if run else "new"
        if is_locked(ctx.runs_dir / p.config_hash):
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


def _die_with_parent() -> None:
    """Child-side: receive SIGKILL when the sweep process dies (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except OSError:
        pass


def run_sweep(ctx: SweepContext, jobs: int = 1, test: bool = True, progress: bool = True,
              only_evaluate: bool = False, summary_path: str | Path | None = None) -> int:
    """Execute every planned run that is not finished (or, with only_evaluate, test finished ones)."""
    ctx.jobs = jobs
    tracker = Tracker(ctx.tracking_uri, ctx.experiment)
    tracker.ensure_experiment()  # create the store before any worker starts
    parents = study_parent_runs(tracker, sorted({s for p in ctx.planned for s in p.studies}))
    by_hash = tracker.runs_by_hash()
    states = run_states(ctx, tracker, by_hash)
    todo = []
    for p in ctx.planned:
        state = states[p.config_hash]
        if only_evaluate:
            run = by_hash.get(p.config_hash)
            if state == "finished" and run is not None and run.data.tags.get("vpr.tested") != "1":
                todo.append(p)
        elif state not in ("finished", "running"):
            todo.append(p)
    print(f"{len(ctx.planned)} distinct runs, {len(todo)} to {'test' if only_evaluate else 'execute'}, "
          f"{jobs} at a time; MLflow store {ctx.tracking_uri}", flush=True)
    devices = _cuda_device_count()
    outcomes: dict[str, str] = {}
    running: list[tuple[subprocess.Popen, PlannedRun, int]] = []
    queue = list(todo)
    free_slots = list(range(jobs))
    start = time.time()
    while queue or running:
        while queue and free_slots:
            p = queue.pop(0)
            slot = free_slots.pop(0)
            proc = _spawn(ctx, p, parents, slot, devices, test, only_evaluate)
            running.append((proc, p, slot))
        time.sleep(0.2)
        for item in list(running):
            proc, p, slot = item
            code = proc.poll()
            if code is None:
                continue
            running.remove(item)
            free_slots.append(slot)
            outcomes[p.config_hash] = {0: "finished", 3: "busy"}.get(code, "failed")
            done = len(outcomes)
            print(f"[{done}/{len(todo)}] {p.config_hash} {outcomes[p.config_hash]} "
                  f"({', '.join(c.label for c in p.cells[:2])}) after {time.time() - start:.0f} s", flush=True)
    print(summary_table(ctx, Tracker(ctx.tracking_uri, ctx.experiment)))
    if summary_path:
        Path(summary_path).parent.mkdir(parents=True, exist_ok=True)
        states = run_states(ctx, Tracker(ctx.tracking_uri, ctx.experiment))
        Path(summary_path).write_text(json.dumps({"runs": len(ctx.planned), "states": states}, indent=2,
                                                 sort_keys=True))
    failed = [h for h, o in outcomes.items() if o == "failed"]
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(failed)} (errors in runs/<hash>/error.txt and MLflow)")
    return 1 if failed else 0


def _spawn(ctx: SweepContext, p: PlannedRun, parents: dict[str, str], slot: int, devices: int, test: bool,
           only_evaluate: bool) -> subprocess.Popen:
    run_dir = ctx.runs_dir / p.config_hash
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = {"config": p.config.to_dict(), "config_hash": p.config_hash, "run_dir": str(run_dir),
            "tracking_uri": ctx.tracking_uri, "experiment": ctx.experiment, "studies": list(p.studies),
            "labels": [f"{c.study}: {c.label}" for c in p.cells], "parent_run_id": parents[p.studies[0]],
            "profile": ctx.profile_name, "test": test, "only_evaluate": only_evaluate}
    (run_dir / "spec.json").write_text(json.dumps(spec, indent=2))
    env = dict(os.environ)
    if devices:
        env["CUDA_VISIBLE_DEVICES"] = str(slot % devices)  # spread slots over the visible GPUs
    elif "OMP_NUM_THREADS" not in env:
        # CPU runs side by side: split the cores instead of oversubscribing them
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // max(1, ctx.jobs)))
    log = open(run_dir / "worker.log", "a")
    return subprocess.Popen([sys.executable, "-m", "pipeline.sweeps.worker", str(run_dir / "spec.json")],
                            stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent)


def _cuda_device_count() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip()])
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
        return len([line for line in out.stdout.splitlines() if line.startswith("GPU")])
    except (OSError, subprocess.SubprocessError):
        return 0


def summary_table(ctx: SweepContext, tracker: Tracker) -> str:
    """Markdown table of every planned run's state and headline metrics, from MLflow."""
    by_hash = tracker.runs_by_hash()
    rows = ["| hash | state | cell | val R@1 | sf_xs_test R@1 | tokyo_xs R@1 |", "|---|---|---|---:|---:|---:|"]
    for p in ctx.planned:
        run = by_hash.get(p.config_hash)
        m = run.data.metrics if run else {}
        state = run.data.tags.get(STATUS_TAG, "new") if run else "new"

        def fmt(key: str) -> str:
            return f"{m[key]:.1f}" if key in m else "-"
        rows.append(f"| {p.config_hash} | {state} | {p.cells[0].study}: {p.cells[0].label} | "
                    f"{fmt('best_val_recall_at_1')} | {fmt('test_sf_xs_test_recall_at_1')} | "
                    f"{fmt('test_tokyo_xs_recall_at_1')} |")
    return "\n".join(rows)

