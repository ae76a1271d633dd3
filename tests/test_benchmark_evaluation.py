"""A finished run tested on benchmarks, for real: `vpr sweep evaluate` for a study's `benchmarks:`,
`vpr evaluate --run --benchmark`, the benchmark table of the report; nothing retrained."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from mlflow import MlflowClient

from cli_helpers import vpr
from test_sweeps import finished_runs, make_project

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def benchmark_root(tmp_path_factory):
    from pipeline.data.synthetic.benchmarks import generate_benchmarks

    out = tmp_path_factory.mktemp("benchmarks")
    generate_benchmarks(out, ["pitts30k", "sped", "nordland"], seed=0, scale="demo", image_size=32, progress=False)
    return out


def test_a_study_with_benchmarks_is_tested_on_them_by_the_evaluate_stage(embedded_root, benchmark_root, tmp_path):
    project = make_project(tmp_path, embedded_root, ["avg", "gem"], epochs=1)
    study_file = project / "experiments" / "t_aggregators.yaml"
    study = yaml.safe_load(study_file.read_text())
    study["benchmarks"] = ["pitts30k", "sped"]
    study_file.write_text(yaml.safe_dump(study, sort_keys=False))
    prepared = project / "data" / "prepared" / "datasets.json"
    data = json.loads(prepared.read_text())
    data["benchmarks"] = {k: str(benchmark_root / k) for k in ("pitts30k", "sped", "nordland")}
    prepared.write_text(json.dumps(data))

    train = vpr(project, "sweep", "run", "--jobs", "2")
    assert train.returncode == 0, train.stdout + train.stderr
    before = {h: r.info.end_time for h, (r,) in finished_runs(project).items()}
    evaluate = vpr(project, "sweep", "evaluate")
    assert evaluate.returncode == 0, evaluate.stdout + evaluate.stderr
    assert "2 to test" in evaluate.stdout
    runs = finished_runs(project)
    for h, (r,) in runs.items():
        m = r.data.metrics
        assert {f"test_{k}_recall_at_{n}" for k in ("pitts30k", "sped") for n in (1, 5, 10, 20)} <= set(m)
        assert "test_nordland_recall_at_1" not in m            # the study did not ask for it
        protocol = json.loads(r.data.tags["vpr.protocol.pitts30k"])
        assert protocol["recall_at"] == [1, 5, 10, 20] and protocol["positive_radius_m"] == 25.0
        assert r.info.end_time == before[h]                     # tested, not retrained
    again = vpr(project, "sweep", "evaluate")
    assert "0 to test" in again.stdout                           # nothing left: no work the second time
    # The evaluate stage reopens the studies' parent runs and ends them again: nothing stays RUNNING.
    store = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    every = store.search_runs([store.get_experiment_by_name("vpr-sweep").experiment_id])
    assert {r.info.status for r in every} == {"FINISHED"}
    assert any(r.data.tags.get("vpr.kind") == "study" for r in every)

    # Any finished run, any benchmark, by hand: recorded in that run.
    run_id = next(iter(runs.values()))[0].info.run_id
    one = vpr(project, "evaluate", "--run", run_id, "--benchmark", "nordland", "--benchmark-root",
              str(benchmark_root), "--recall-at", "1,5", "--quiet")
    assert one.returncode == 0, one.stderr
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    metrics = client.get_run(run_id).data.metrics
    assert json.loads(one.stdout)["recalls"]["nordland"]["1"] == pytest.approx(metrics["test_nordland_recall_at_1"])

    report = vpr(project, "report", "--out", "reports", "--quiet")
    assert report.returncode == 0, report.stderr
    tex = (project / "reports" / "tables" / "t_aggregators_benchmarks.tex").read_text()
    assert "Pitts30k" in tex and "SPED" in tex and "R@10" in tex
    assert "t_aggregators_benchmarks" in (project / "reports" / "README.md").read_text()


def test_unknown_or_unavailable_benchmarks_are_one_line_errors(embedded_root, benchmark_root, tmp_path):
    project = make_project(tmp_path, embedded_root, ["avg"], epochs=1)
    wrong = vpr(project, "evaluate", "--checkpoint", "x.pt", "--benchmark", "pitts")
    assert wrong.returncode == 2 and "unknown benchmark 'pitts' (valid: pitts30k" in wrong.stderr
    absent = vpr(project, "evaluate", "--checkpoint", "x.pt", "--benchmark", "tokyo247", "--benchmark-root",
                 str(benchmark_root))
    assert absent.returncode == 2 and "no folder for benchmark(s) tokyo247 in --benchmark-root" in absent.stderr
    study_file = project / "experiments" / "t_aggregators.yaml"
    study = yaml.safe_load(study_file.read_text())
    study["benchmarks"] = ["pitts300k"]
    study_file.write_text(yaml.safe_dump(study, sort_keys=False))
    plan = vpr(project, "sweep", "plan")
    assert plan.returncode == 2 and "benchmarks[0]: unknown benchmark 'pitts300k'" in plan.stderr


def test_descriptors_and_recall_do_not_depend_on_the_batch_size(benchmark_root):
    from pipeline.config import config_from_dict
    from pipeline.data.benchmarks.protocol import ProtocolConfig
    from pipeline.evaluation.from_checkpoint import evaluate_on_benchmark
    from pipeline.models import model_from_config

    torch.manual_seed(0)
    cfg = config_from_dict({"model": {"pretrained": "none", "aggregator": {"name": "gem"}},
                            "evaluation": {"resize": [32, 32]}, "training": {"precision": "fp32"}})
    model = model_from_config(cfg).eval()
    results = [evaluate_on_benchmark(model, cfg, benchmark_root / "pitts30k",
                                     ProtocolConfig(batch_size=b), device="cpu", progress=False)
               for b in (1, 64)]
    assert results[0]["recalls"] == results[1]["recalls"]
    assert np.isfinite(float(results[0]["recalls"]["1"]))
