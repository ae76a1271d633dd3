"""Compute every study's planned (study, cell, seed) -> config hash, per params.yaml profile.

Used by tests/test_plan_pinned.py, and run as a script to regenerate tests/data/planned_hashes.json
after a change that is *meant* to change run identities (say why in the commit):

    python tests/pinned_plan.py > tests/data/planned_hashes.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Fixed tuned values so studies with `optimizer: tuned` resolve the same way everywhere.
TUNED = {"tune_s003_fig2": {"adamw": {"lr": 1.0e-3, "weight_decay": 1.0e-2},
                            "asgd": {"lr": 0.05, "weight_decay": 1.0e-4},
                            "adam": {"lr": 1.0e-4, "weight_decay": 0.0},
                            "sgd": {"lr": 0.05, "weight_decay": 1.0e-3}}}


def write_tuned(folder: Path) -> Path:
    """Write TUNED as best_params.json files under `folder`."""
    for tuning_id, best in TUNED.items():
        (folder / tuning_id).mkdir(parents=True, exist_ok=True)
        (folder / tuning_id / "best_params.json").write_text(json.dumps(best))
    return folder


def planned_hashes(tuned_dir: Path) -> dict[str, dict[str, str]]:
    """{profile: {"study|cell|seed": hash}} for every profile of params.yaml and every study."""
    from pipeline.studies.plan import plan
    from pipeline.studies.study import load_studies

    profiles = yaml.safe_load((REPO / "params.yaml").read_text())["profiles"]
    studies = load_studies([REPO / "experiments"])
    out: dict[str, dict[str, str]] = {}
    for name, profile in profiles.items():
        cells = {}
        for run in plan(studies, profile, None, tuned_dir):
            for cell in run.cells:
                cells[f"{cell.study}|{cell.label}|{cell.seed}"] = run.config_hash
        out[name] = dict(sorted(cells.items()))
    return out


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(planned_hashes(write_tuned(Path(tmp))), indent=1))
