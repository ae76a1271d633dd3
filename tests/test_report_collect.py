"""The report's cells come from the plan the train stage recorded (data/sweep/plan.json), on a real
(empty) MLflow store; without the file the studies are planned again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.reporting.collect import collect
from pipeline.studies.plan import PlanFileError
from pipeline.studies.plan import expand_study
from pipeline.studies.study import load_study
from pipeline.tracking.store import Tracker

STUDY = Path(__file__).resolve().parents[1] / "experiments" / "s003_table2_poolings.yaml"


@pytest.fixture(scope="module")
def tracker(tmp_path_factory) -> Tracker:
    return Tracker(f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}")


def test_recorded_plan_decides_the_cells_hashes(tracker, tmp_path):
    study = load_study(STUDY)
    planned = {c.label: c.config_hash for c in expand_study(study)}
    # A recorded plan (as `vpr sweep run` writes it) whose runs differ from today's planning, e.g.
    # recorded before a study file changed: the report must describe what was trained.
    runs = [{"config_hash": f"recorded{i}", "config": {}, "cells": [{"study": study.id, "label": label, "seed": 0}]}
            for i, label in enumerate(reversed(study.labels))]
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"version": 1, "profile": "demo", "runs": runs}))
    cells = collect([study], tracker, None, None, cache_dir=tmp_path / "cache", tuned_dir=None, plan_path=plan)
    got = cells[study.id]
    assert [c.label for c in got] == study.labels                       # in the study's order
    assert {c.label: c.config_hash for c in got} == {"avg": "recorded2", "gem": "recorded1", "mixvpr": "recorded0"}
    assert all(c.status == "missing" for c in got)                      # nothing ran in this store
    # No recorded plan: planned again, as the train stage would.
    again = collect([study], tracker, None, None, cache_dir=tmp_path / "cache", tuned_dir=None,
                    plan_path=tmp_path / "absent.json")
    assert {c.label: c.config_hash for c in again[study.id]} == planned


def test_unreadable_plan_is_a_user_error(tracker, tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"version": 7, "runs": []}))
    with pytest.raises(PlanFileError, match="plan.json: plan version 7, expected 1"):
        collect([load_study(STUDY)], tracker, None, None, cache_dir=tmp_path, tuned_dir=None, plan_path=plan)
