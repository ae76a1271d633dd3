"""`vpr tune dashboard`: Optuna's own dashboard on a tuning's storage, reached over its HTTP API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import create_trial

from services import free_port, stop_group, wait_http

from pipeline.tuning.storage import open_storage

pytest.importorskip("optuna_dashboard")


def _studies_in(storage) -> None:
    """Two studies named as `vpr tune run` names them, with a finished trial each."""
    for opt in ("adamw", "sgd"):
        study = optuna.create_study(study_name=f"tune_dash/{opt}", storage=storage, direction="maximize")
        study.add_trial(create_trial(params={"lr": 1e-3}, distributions={"lr": FloatDistribution(1e-4, 1e-1, log=True)},
                                     value=42.0))


def _dashboard(project: Path, *args: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "tune", "dashboard", *args, "--port", str(port)],
                            cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env=dict(os.environ))
    return proc, f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("kind", ["journal", "rdb"])
def test_dashboard_serves_our_studies(tmp_path, kind):
    if kind == "journal":
        storage, _ = open_storage(None, "tune_dash", tmp_path / "optuna")
        args = ["tune_dash"]
    else:
        url = f"sqlite:///{tmp_path / 'optuna.db'}"
        storage, _ = open_storage(url, "tune_dash")
        args = ["--tuning-storage", url]
    _studies_in(storage)
    proc, base = _dashboard(tmp_path, *args)
    try:
        wait_http(f"{base}/api/studies", timeout=120, proc=proc)
        with urllib.request.urlopen(f"{base}/api/studies", timeout=10) as response:
            studies = json.load(response)["study_summaries"]
        assert sorted(s["study_name"] for s in studies) == ["tune_dash/adamw", "tune_dash/sgd"]
        with urllib.request.urlopen(f"{base}/api/studies/{studies[0]['study_id']}", timeout=10) as response:
            trials = json.load(response)["trials"]
        assert [t["values"] for t in trials] == [[42.0]]
        with urllib.request.urlopen(f"{base}/dashboard", timeout=10) as response:
            assert response.status == 200 and "<html" in response.read().decode().lower()
    finally:
        stop_group(proc)


def test_dashboard_without_storage_names_what_to_run(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", "tune", "dashboard", "tune_none"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "no tuning storage optuna/tune_none.journal: run `vpr tune run`" in result.stderr
    assert not (tmp_path / "optuna").exists()
