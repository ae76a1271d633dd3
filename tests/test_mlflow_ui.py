"""MLflow as its users expect: experiment kind, dataset inputs, a loadable model, parent runs that end,
system metrics, and the UI itself in a real headless Chromium."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import mlflow.pytorch
import pytest
import torch
from mlflow import MlflowClient

from cli_helpers import vpr
from services import free_port, require_or_skip, stop_group, wait_http
from test_sweeps import make_project

CHROMIUM = os.environ.get("VPR_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("VPR_CHROMEDRIVER", "/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def swept(embedded_root, tmp_path_factory):
    """A project after `vpr sweep run` of two cells, system metrics sampled every second."""
    project = make_project(tmp_path_factory.mktemp("mlflow-ui"), embedded_root, ["avg", "gem"])
    old = os.environ.get("VPR_SYSTEM_METRICS_INTERVAL")
    os.environ["VPR_SYSTEM_METRICS_INTERVAL"] = "1"
    try:
        result = vpr(project, "sweep", "run", "--jobs", "2")
    finally:
        os.environ.pop("VPR_SYSTEM_METRICS_INTERVAL") if old is None else os.environ.update(
            VPR_SYSTEM_METRICS_INTERVAL=old)
    assert result.returncode == 0, result.stdout + result.stderr
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name("vpr-sweep")
    return project, client, exp


def _runs(client, exp, kind: str):
    return client.search_runs([exp.experiment_id], f"tags.`vpr.kind` = '{kind}'")


def test_experiment_opens_on_training_runs_and_parents_end(swept):
    project, client, exp = swept
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    (parent,) = _runs(client, exp, "study")
    assert parent.info.status == "FINISHED" and parent.info.end_time
    assert {r.info.status for r in _runs(client, exp, "run")} == {"FINISHED"}


def test_runs_record_datasets_model_and_system_metrics(swept, embedded_root):
    project, client, exp = swept
    for run in _runs(client, exp, "run"):
        inputs = {(d.dataset.name, {t.key: t.value for t in d.tags}["mlflow.data.context"], d.dataset.source)
                  for d in run.inputs.dataset_inputs}
        assert {(n, c) for n, c, _ in inputs} == {("gsv_xs", "train"), ("sf_xs_val", "validation"),
                                                  ("sf_xs_test", "test"), ("tokyo_xs", "test")}
        assert all(json.loads(src)["uri"].endswith(("gsv_xs", "val", "test")) for _, _, src in inputs)
        assert all(d.dataset.digest for d in run.inputs.dataset_inputs)
        assert any(k.startswith("system/cpu_utilization") for k in run.data.metrics)
        assert any(k.startswith("system/system_memory_usage") for k in run.data.metrics)

        mlflow.set_tracking_uri(client.tracking_uri)
        model = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/model")
        images = torch.rand(3, 3, 32, 32)
        with torch.no_grad():
            descriptors = model(images)
        assert descriptors.shape[0] == 3 and descriptors.ndim == 2 and torch.isfinite(descriptors).all()


def test_evaluate_reads_the_model_from_mlflow(swept, embedded_root):
    project, client, exp = swept
    run = _runs(client, exp, "run")[0]
    result = vpr(project, "evaluate", "--run", run.info.run_id, "--dataset",
                 str(embedded_root / "tokyo_xs" / "test"), "--device", "cpu", "--quiet")
    assert result.returncode == 0, result.stderr
    recalls = json.loads(result.stdout)["recalls"]
    # Exactly the recorded recalls: the stored model (bf16 where the run evaluated in bf16) loses nothing.
    assert recalls and recalls == {n: run.data.metrics[f"test_tokyo_xs_recall_at_{n}"] for n in recalls}
    bad = vpr(project, "evaluate", "--run", "0" * 32, "--dataset", str(embedded_root / "tokyo_xs" / "test"))
    assert bad.returncode == 2 and "--run 00000000" in bad.stderr and "Traceback" not in bad.stderr


def test_interrupted_sweep_ends_its_study_run_killed(embedded_root, tmp_path):
    project = make_project(tmp_path, embedded_root, ["avg", "gem"], epochs=30)
    sweep = vpr(project, "sweep", "run", "--jobs", "1", wait=False)
    db = project / "mlflow.db"
    deadline = time.time() + 300
    while time.time() < deadline and not list((project / "runs").glob("*/history.json")) and \
            not list((project / "runs").glob("*/last.pt")):
        time.sleep(0.5)  # wait until the first run trains
    sweep.send_signal(signal.SIGTERM)  # the sweep process only; its workers die with it
    sweep.wait(timeout=120)
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name("vpr-sweep")
    (parent,) = _runs(client, exp, "study")
    assert parent.info.status == "KILLED", sweep.stdout.read()


def test_mlflow_ui_lists_the_study_runs_in_chromium(swept, tmp_path):
    """`vpr ui`, opened at the URL it prints, shows the runs table with the study and its runs."""
    if not Path(CHROMIUM).exists() or not Path(CHROMEDRIVER).exists():
        require_or_skip(f"{CHROMIUM} or {CHROMEDRIVER} not found; install Debian's `chromium chromium-driver`")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
    except ImportError:
        require_or_skip("selenium missing: pip install -e '.[services]'")
    project, client, exp = swept
    port = free_port()
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    ui = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "ui", "--port", str(port)], cwd=project, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1600,1000", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    browser = None
    try:
        url = _printed_url(ui)
        wait_http(f"http://127.0.0.1:{port}/health", timeout=180, proc=ui)
        browser = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        browser.get(url)
        _wait_for(browser, "t_aggregators")  # the study's parent run, its runs folded under it
        for button in browser.find_elements(By.CSS_SELECTOR, ".ag-row button"):
            button.click()  # unfold
        names = [r.info.run_name for r in _runs(client, exp, "run")]
        for name in names:
            _wait_for(browser, name)
        assert "matching runs" in browser.page_source  # the runs table, not the GenAI overview
        browser.save_screenshot(str(Path(os.environ.get("VPR_SCREENSHOT_DIR", tmp_path)) / "mlflow_ui.png"))
    finally:
        if browser is not None:
            browser.quit()
        stop_group(ui)


def _printed_url(ui: subprocess.Popen) -> str:
    """The URL `vpr ui` tells the user to open (the first line matching it)."""
    for _ in range(100):
        match = re.search(r"open (http://\S+)", ui.stdout.readline())
        if match:
            return match.group(1)
    raise AssertionError("`vpr ui` printed no URL to open")


def _wait_for(browser, text: str, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while text not in browser.page_source:
        assert time.time() < deadline, f"{text!r} not on the page within {timeout:.0f} s"
        time.sleep(0.5)
