"""Run the real `vpr` command in a project folder, as a user would (shared by the process tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def vpr(project: Path, *args: str, wait: bool = True):
    """`vpr ARGS` in `project` with the project's own MLflow store (single-threaded torch).

    wait=False returns the Popen (own process group, so a test can SIGKILL the whole sweep).
    """
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "pipeline.cli", *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
    return subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=900)
