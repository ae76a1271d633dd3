"""The worker process of sweeps and tunings: executes spec files (`pipeline.execution.protocol`).

    python -m pipeline.execution.worker --serve [TRACKING_URI]   # long-lived: a spec path per stdin line
    python -m pipeline.execution.worker SPEC.json                 # one spec, then exit

`--serve` is what `LocalExecutor` starts, one per slot: it imports torch and the pipeline once
(`warm_up`, opening the MLflow store at TRACKING_URI, before it reads a request) and executes
spec after spec, a run or a tuning share alike. While it executes a run it sends its output
(file descriptors 1 and 2, so also C-level messages) to the run folder's worker log; for each
spec it answers one line on its original stdout: the outcome (`finished`, `busy` or `failed`).
A single spec's outcome is its exit status (0 finished, 1 failed, 3 busy).
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import traceback
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import IO, Iterable, Iterator

from pipeline.execution.protocol import BUSY, EXIT_STATUS, FAILED, FINISHED, Outcome, TuningSpec, read_spec, with_tags


def execute(spec_path: str | Path, tags: dict[str, str] | None = None) -> Outcome:
    """Execute the spec in `spec_path` (a run, a run to test, or a tuning share); its outcome.

    `tags` are added to the MLflow records (e.g. the Ray node executing it)."""
    spec = read_spec(spec_path)
    if tags:
        spec = with_tags(spec, tags)
    if isinstance(spec, TuningSpec):
        from pipeline.execution.trial import run_tuning_share

        return run_tuning_share(spec)
    from pipeline.execution.run import evaluate_run, execute_run
    from pipeline.runs.folder import RunBusy
    from pipeline.tracking.lease import LeaseHeld

    try:
        if spec.only_evaluate:
            evaluate_run(spec)
        else:
            execute_run(spec)
    except (RunBusy, LeaseHeld) as err:
        print(err, file=sys.stderr)
        return BUSY
    except Exception as err:  # already recorded by execute_run; the traceback goes to the worker log
        traceback.print_exc()
        print(f"run failed: {err}", file=sys.stderr)
        return FAILED
    return FINISHED


@contextmanager
def output_to(log_path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (the descriptors) to `log_path` for the duration."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def execute_logged(spec_path: str | Path, tags: dict[str, str] | None = None) -> Outcome:
    """`execute`, with the output sent where the spec says (a run's worker log)."""
    log_path = read_spec(spec_path).log_path
    with output_to(log_path) if log_path else nullcontext():
        print(f"worker {os.getpid()}: {spec_path}", flush=True)
        return execute(spec_path, tags)


def serve_requests(requests: Iterable[str], replies: IO[str]) -> int:
    """Execute every spec path read from `requests`; answer each with its outcome on `replies`."""
    for line in requests:
        if not line.strip():
            continue
        outcome = execute_logged(line.strip())
        _release_memory()
        replies.write(f"{outcome}\n")
        replies.flush()
    return 0


def _release_memory() -> None:
    """Drop what the finished job left (its model, loaders, cached GPU blocks) before the next."""
    gc.collect()
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    """Entry point: `--serve [TRACKING_URI]` or one SPEC.json (module docstring)."""
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if argv[:1] == ["--serve"]:
        # The original stdout is the reply channel; anything printed between jobs goes to stderr.
        replies = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)
        from pipeline.execution.warm_up import warm_up

        warm_up(argv[1] if len(argv) > 1 else None)  # before the first request: the caller is planning
        return serve_requests(sys.stdin, replies)
    return EXIT_STATUS[execute_logged(argv[0])]


if __name__ == "__main__":
    from pipeline.process_exit import run_entry_point

    run_entry_point(main)
