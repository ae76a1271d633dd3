"""`dvc plots show` on the project's own dvc.yaml and template: a curves.csv as `vpr report` writes it
(from real study files' cells) is turned by the real DVC into Vega-Lite specs, which vl-convert
renders offline to PNG: one panel per study, one line per cell, titles and axis labels."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.reporting.collect import CellResult
from pipeline.reporting.runs_table import CURVE_COLUMNS, curves_frame
from pipeline.studies.study import load_studies

ROOT = Path(__file__).resolve().parents[1]
DVC = Path(sys.executable).parent / "dvc"
vl_convert = pytest.importorskip("vl_convert", reason="vl-convert-python is not installed (pip install -e '.[dev]')")


def _history(epochs: int, start: float) -> list[dict]:
    return [{"epoch": e, "train_loss": 1.0 / (e + 1), "lr": 1e-4, "val_recall_at_1": start + 4 * e,
             "val_recall_at_5": start + 10 + 4 * e, "val_recall_at_10": start + 15 + 4 * e} for e in range(epochs)]


@pytest.fixture(scope="module")
def results() -> dict[str, list[CellResult]]:
    """Two real studies' cells, all finished with a 4-epoch history but one that failed."""
    studies = {s.id: s for s in load_studies([ROOT / "experiments"])}
    out = {}
    for sid in ("s003_table4_schedulers", "s004_table3_losses"):
        cells = [CellResult(sid, label, 0, f"h{i}", "finished", history=_history(4, 20 + 3 * i))
                 for i, label in enumerate(studies[sid].labels)]
        cells[-1] = CellResult(sid, cells[-1].label, 0, "hx", "failed")
        out[sid] = cells
    return out


def _dvc(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(DVC), *args], cwd=project, capture_output=True, text=True, timeout=300)


def test_curves_frame_one_row_per_study_cell_epoch(results):
    frame = curves_frame(results)
    assert tuple(frame.columns) == CURVE_COLUMNS
    assert len(frame) == 4 * sum(len(cells) - 1 for cells in results.values())   # the failed cell has none
    assert set(frame["study"]) == set(results)
    assert frame.groupby(["study", "cell"]).size().eq(4).all()


def test_dvc_plots_render_one_line_per_cell_with_titles(results, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    for name in ("dvc.yaml", "params.yaml"):       # dvc.yaml's stages read params.yaml
        shutil.copy(ROOT / name, project / name)
    template = project / "pipeline" / "reporting" / "plot_templates" / "study_cells.json"
    template.parent.mkdir(parents=True)
    shutil.copy(ROOT / "pipeline" / "reporting" / "plot_templates" / "study_cells.json", template)
    (project / "reports").mkdir()
    curves_frame(results).to_csv(project / "reports" / "curves.csv", index=False)
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    assert _dvc(project, "init", "-q").returncode == 0

    shown = _dvc(project, "plots", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    plots = json.loads(shown.stdout)["data"]
    assert set(plots) == {"val_recall_at_1", "val_recall_at_5", "train_loss"}
    cells = {(s, c.label) for s, cs in results.items() for c in cs if c.status == "finished"}
    for name, (plot,) in plots.items():
        spec = plot["content"]
        assert spec["title"]["text"].endswith("one panel per study, one line per cell")
        encoding = spec["spec"]["encoding"]
        assert encoding["x"]["title"] == "epoch (0 = first)" and encoding["y"]["title"]
        assert spec["facet"]["field"] == "study" and encoding["color"]["field"] == "cell"
        series = {(v["study"], v["cell"]) for v in spec["data"]["values"]}
        assert series == cells                                    # one line per finished cell, per study
        png = tmp_path / f"{name}.png"
        png.write_bytes(vl_convert.vegalite_to_png(spec, scale=1))
        with Image.open(png) as img:
            assert img.width > 600 and img.height > 250
            assert np.asarray(img.convert("L")).std() > 10, f"{png} looks blank"
