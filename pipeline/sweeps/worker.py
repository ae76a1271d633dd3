"""Child process of a sweep: `python -m pipeline.sweeps.worker SPEC.json` executes one run.

Exit status: 0 finished, 3 another process holds the run, 1 failed (recorded in MLflow).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from pipeline.sweeps.execute import RunBusy, evaluate_run, execute_run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    spec = json.loads(Path((argv or sys.argv[1:])[0]).read_text())
    try:
        if spec.get("only_evaluate"):
            evaluate_run(spec)
        else:
            execute_run(spec)
    except RunBusy as err:
        print(err, file=sys.stderr)
        return 3
    except Exception as err:  # already recorded by execute_run; the traceback goes to worker.log
        import traceback

        traceback.print_exc()
        print(f"run failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
