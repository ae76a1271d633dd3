"""Worker process of a sweep: executes runs described by spec files (written by the runner).

    python -m pipeline.sweeps.worker --serve [TRACKING_URI]  # long-lived: a spec path per stdin line
    python -m pipeline.sweeps.worker SPEC.json                # one run, then exit

`--serve` is what `LocalExecutor` starts, one per slot: it imports torch and the pipeline once
(`warm_up`, opening the MLflow store at TRACKING_URI, before it reads a request) and runs run
after run. For each run it sends its output (file descriptors 1 and 2, so also C-level
messages) to `<run_dir>/worker.log`, and answers one line on its original stdout: the run's code.
Codes (and exit status of a single run): 0 finished, 3 another process holds the run, 1 failed
(recorded in MLflow).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from pipeline.sweeps.executors import BUSY, FINISHED

FAILED = 1


def run_one(spec_path: str | Path, tags: dict[str, str] | None = None) -> int:
    """Execute (or, for an only_evaluate spec, test) one run; its code (module docstring).

    `tags` are added to the run's MLflow record (e.g. the Ray node executing it)."""
    from pipeline.sweeps.execute import RunBusy, evaluate_run, execute_run
    from pipeline.sweeps.lease import LeaseHeld

    spec = json.loads(Path(spec_path).read_text())
    if tags:
        spec["tags"] = tags
    try:
        if spec.get("only_evaluate"):
            evaluate_run(spec)
        else:
            execute_run(spec)
    except (RunBusy, LeaseHeld) as err:
        print(err, file=sys.stderr)
        return BUSY
    except Exception as err:  # already recorded by execute_run; the traceback goes to worker.log
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


def serve(requests, replies) -> int:
    """Run every spec path read from `requests`; answer each with its code on `replies`."""
    for line in requests:
        if not line.strip():
            continue
        spec_path = Path(line.strip())
        run_dir = Path(json.loads(spec_path.read_text())["run_dir"])
        with output_to(run_dir / "worker.log"):
            print(f"worker {os.getpid()}: {spec_path}", flush=True)
            code = run_one(spec_path)
        _release_memory()
        replies.write(f"{code}\n")
        replies.flush()
    return 0


def _release_memory() -> None:
    """Drop what the finished run left (its model, loaders, cached GPU blocks) before the next."""
    gc.collect()
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    """Entry point: `--serve` or one SPEC.json."""
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if argv[:1] == ["--serve"]:
        # The original stdout is the reply channel; anything printed between runs goes to stderr.
        replies = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)
        from pipeline.sweeps.warm_up import warm_up

        warm_up(argv[1] if len(argv) > 1 else None)  # before the first request: the runner is planning
        return serve(sys.stdin, replies)
    return run_one(argv[0])


if __name__ == "__main__":
    from pipeline.process_exit import run_entry_point

    run_entry_point(main)
