"""Every study cell keeps its run identity (config hash) unless a change means to move it.

A refactor must not change which run serves a table cell: a new hash would retrain finished runs
and orphan their MLflow records. tests/data/planned_hashes.json was computed on the code before the
change; a deliberate change of the recipe regenerates it (see tests/pinned_plan.py) and says why.
"""

from __future__ import annotations

import json
from pathlib import Path

from pinned_plan import planned_hashes, write_tuned

PINNED = Path(__file__).parent / "data" / "planned_hashes.json"


def test_every_study_cell_keeps_its_config_hash(tmp_path: Path) -> None:
    pinned = json.loads(PINNED.read_text())
    now = planned_hashes(write_tuned(tmp_path))
    assert now.keys() == pinned.keys(), "params.yaml profiles changed"
    for profile, cells in pinned.items():
        assert sorted(now[profile]) == sorted(cells), f"{profile}: the set of study cells changed"
        moved = {k: (v, now[profile][k]) for k, v in cells.items() if now[profile][k] != v}
        assert not moved, f"{profile}: cells whose run identity changed (pinned, now): {moved}"
