"""Tests of pipeline.reporting.figures on real data: embedded datasets, predictions of real (tiny,
untrained) models, LR trajectories of the real schedulers; histories are synthetic."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.data.datasets import EvalDataset
from pipeline.evaluation import EvaluationResult, evaluate
from pipeline.config import ModelConfig
from pipeline.models import build_model
from pipeline.reporting import figures
from pipeline.reporting.collect import CellResult
from pipeline.studies.plan import expand_study
from pipeline.studies.study import load_studies

# --------------------------------------------------------------------------- helpers


def make_cell(label: str, status: str = "finished", *, seed: int = 0, config: dict | None = None,
              history: list[dict] | None = None, predictions: dict[str, Path] | None = None,
              study: str = "test") -> CellResult:
    """A CellResult as pipeline.reporting.collect builds it (only the fields figures read)."""
    return CellResult(study=study, label=label, seed=seed, config_hash=f"h{label}{seed}", status=status,
                      config=config, history=history or [], predictions=predictions or {})


def synthetic_history(epochs: int, start: float, gain: float, lr: float = 1e-4) -> list[dict]:
    """Per-epoch records shaped like the trainer's history.json (R@N rising towards a plateau)."""
    out = []
    for e in range(epochs):
        r1 = start + gain * (1 - math.exp(-0.4 * (e + 1)))
        out.append({"epoch": e, "train_loss": 1.0 / (e + 1), "lr": lr, "val_recall_at_1": r1,
                    "val_recall_at_5": min(100.0, r1 + 15), "val_recall_at_10": min(100.0, r1 + 22)})
    return out


def assert_images(files: list[Path], min_png_bytes: int = 8_000) -> None:
    """Each figure is a readable PNG with content (not one flat colour) and a PDF next to it."""
    assert files, "no files written"
    pngs = [f for f in files if f.suffix == ".png"]
    pdfs = [f for f in files if f.suffix == ".pdf"]
    assert len(pngs) == len(pdfs) and {p.stem for p in pngs} == {p.stem for p in pdfs}
    for png in pngs:
        assert png.stat().st_size > min_png_bytes, png
        with Image.open(png) as img:
            assert img.format == "PNG" and img.width > 400 and img.height > 200
            assert np.asarray(img.convert("L")).std() > 5, f"{png} looks blank"
    for pdf in pdfs:
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 2_000, pdf


@pytest.fixture(scope="module")
def studies() -> dict:
    return {s.id: s for s in load_studies(["experiments"])}


@pytest.fixture(scope="module")
def tokyo_predictions(embedded_root, tmp_path_factory) -> dict[str, Path]:
    """Tokyo-XS predictions of three tiny untrained models (different aggregators and inits)."""
    split = EvalDataset(embedded_root / "tokyo_xs" / "test", (32, 32))
    out = {}
    base = tmp_path_factory.mktemp("predictions")
    for i, aggregator in enumerate(("avg", "gem", "cosplace")):
        torch.manual_seed(i)
        model = build_model(ModelConfig(pretrained="none", aggregator=aggregator), (32, 32)).eval()
        result = evaluate(model, split, recall_at=(1, 5, 10), top_k=10, batch_size=128, progress=False)
        out[aggregator] = result.save(base / aggregator)
    return out


# --------------------------------------------------------------------------- R@N curves


def test_recall_curves_mean_over_seeds_skips_missing(studies, tmp_path):
    study = studies["s000_table1_losses"]  # per_epoch, with the paper's per-epoch numbers
    cells = [make_cell(label, seed=seed, history=synthetic_history(10, 30 + 5 * i + seed, 25))
             for i, label in enumerate(study.labels) for seed in (0, 1, 2)]
    cells += [make_cell(study.labels[0], "failed", seed=3), make_cell("not run", "missing"),
              make_cell(study.labels[1], seed=4)]  # finished without history: skipped too
    files = figures.recall_curves(study, cells, tmp_path)
    assert [f.name for f in files] == ["s000_table1_losses_recall_curves.png",
                                       "s000_table1_losses_recall_curves.pdf"]
    assert_images(files)


def test_recall_curves_without_data_write_nothing(studies, tmp_path):
    study = studies["s000_table1_losses"]
    cells = [make_cell(label, "missing") for label in study.labels] + [make_cell("x", "failed")]
    assert figures.recall_curves(study, cells, tmp_path) == []
    assert figures.lr_schedules(cells, tmp_path) == []
    assert figures.qualitative_retrievals(cells, tmp_path, tmp_path) == []
    assert list(tmp_path.iterdir()) == []


def test_label_styles_colour_the_main_variant():
    labels = [f"{agg} / {s}" for agg in ("gem", "mixvpr") for s in ("A", "B", "C", "D")]
    styles = figures.label_styles(labels)
    # Same scheduler -> same colour and marker; same aggregator -> same line style.
    assert styles["gem / A"].color == styles["mixvpr / A"].color
    assert len({styles[f"gem / {s}"].color for s in "ABCD"}) == 4
    assert styles["gem / A"].linestyle != styles["mixvpr / A"].linestyle
    assert styles["gem / A"].linestyle == styles["gem / D"].linestyle
    assert len({s.color for s in figures.label_styles([str(i) for i in range(14)]).values()}) == 14


# --------------------------------------------------------------------------- LR schedules


def write_lr_csv(path: Path, lrs_per_epoch: list[list[float]]) -> Path:
    """An lr_schedule.csv as the trainer writes it: step,epoch,lr, one row per optimizer step."""
    rows = ["step,epoch,lr"]
    step = 0
    for epoch, lrs in enumerate(lrs_per_epoch):
        for lr in lrs:
            rows.append(f"{step},{epoch},{lr!r}")
            step += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n")
    return path


def triangle(epochs: int, spe: int) -> list[list[float]]:
    """Seed 003's CyclicLR stepped per epoch: 1e-3, 0.1, 1e-3, 0.05, ... (triangular2)."""
    peaks = [1e-3 if e % 2 == 0 else 1e-3 + (0.1 - 1e-3) / 2 ** (e // 2) for e in range(epochs)]
    return [[p] * spe for p in peaks]


def test_read_lr_schedule_places_steps_within_epochs(tmp_path):
    path = write_lr_csv(tmp_path / "lr_schedule.csv", [[1e-4, 2e-4, 3e-4, 4e-4], [4e-4] * 4, [1.2e-4] * 4])
    sched = figures.read_lr_schedule(path)
    assert sched.epochs == 3 and len(sched.lr) == 12
    assert sched.x[1] == pytest.approx(0.25) and sched.x[4] == pytest.approx(1.0) and sched.x[11] == pytest.approx(2.75)
    assert sched.lr[2] == pytest.approx(3e-4) and sched.lr[-1] == pytest.approx(1.2e-4)


@pytest.mark.parametrize("text, what", [("step,lr\n0,0.1\n", "header"), ("step,epoch,lr\n0,0,fast\n", "fast"),
                                        ("step,epoch,lr\n", "no optimizer step")])
def test_read_lr_schedule_names_a_bad_file(tmp_path, text, what):
    from pipeline.errors import UserError

    path = tmp_path / "lr_schedule.csv"
    path.write_text(text)
    with pytest.raises(UserError, match=what) as err:
        figures.read_lr_schedule(path)
    assert str(path) in str(err.value)


def test_lr_schedules_one_line_per_recorded_schedule(studies, tmp_path):
    study = studies["s003_table4_schedulers"]
    schedules = {"multistep": [[2e-4] * 5 + [6e-5] * 5] + [[6e-5] * 10] * 5,
                 "plateau": [[2e-4] * 10] * 4 + [[2e-5] * 10] * 2,
                 "cosine": [[1e-6 + (2e-4 - 1e-6) * (1 + math.cos(math.pi * e / 6)) / 2] * 10 for e in range(6)],
                 "cyclic": triangle(6, 10)}
    cells = []
    for c in expand_study(study):
        cfg = c.config.to_dict()
        csv = write_lr_csv(tmp_path / "runs" / c.label / "lr_schedule.csv", schedules[cfg["scheduler"]["name"]])
        cells.append(make_cell(c.label, config=cfg, study=study.id))
        cells[-1].lr_schedule = csv
    cells[0].lr_schedule = None                       # finished without the file: a note, not a crash
    cells[-1] = make_cell(cells[-1].label, "failed", study=study.id)
    groups, reasons = figures.lr.recorded_schedules(cells)
    assert len(groups) == 4                           # GeM and MixVPR share each recorded trajectory
    assert "LR not recorded" in reasons[id(cells[0])] and reasons[id(cells[-1])] == "failed"
    files = figures.lr_schedules(cells, tmp_path / "out")
    assert [f.name for f in files] == ["lr_schedules.png", "lr_schedules.pdf"]
    assert_images(files)


def test_lr_schedules_without_any_recording(tmp_path):
    cells = [make_cell("a", config={"scheduler": {"name": "cosine"}}), make_cell("b", "failed")]
    files = figures.lr_schedules(cells, tmp_path)     # a figure whose note says what is missing
    assert_images(files, min_png_bytes=5_000)
    assert figures.lr_schedules([make_cell("b", "failed")], tmp_path / "none") == []


def test_old_history_keys_are_read(tmp_path, studies):
    from pipeline.reporting.collect import normalize_history

    old = [{"epoch": e, "val_recall@1": 10.0 + e, "val_recall@5": 20.0 + e} for e in range(3)]
    assert normalize_history(old)[2] == {"epoch": 2, "val_recall_at_1": 12.0, "val_recall_at_5": 22.0}
    study = studies["s000_table1_losses"]
    cells = [make_cell(study.labels[0], history=normalize_history(old))]
    assert len(figures.recall_curves(study, cells, tmp_path)) == 2


# --------------------------------------------------------------------------- qualitative


def test_select_hard_queries_picks_r1_misses(tokyo_predictions):
    results = [EvaluationResult.load(d) for d in tokyo_predictions.values()]
    misses = np.sum([~r.hits()[:, 0] for r in results], axis=0)
    answerable = np.array([len(p) > 0 for p in results[0].positives])
    chosen = figures.select_hard_queries(results, 4)
    assert len(chosen) == 4 and len(set(chosen)) == 4
    assert all(answerable[q] for q in chosen)
    assert all(misses[q] == misses[answerable].max() for q in chosen)
    assert misses[chosen].min() >= 1  # every chosen query is missed at R@1 by some method


def test_qualitative_retrievals_grid(tokyo_predictions, embedded_root, tmp_path):
    cells = [make_cell(name, predictions={"tokyo_xs": folder}) for name, folder in tokyo_predictions.items()]
    cells += [make_cell("ConvAP", "failed"), make_cell("MixVPR", "missing"),
              make_cell("avg", seed=1, predictions={"tokyo_xs": tokyo_predictions["gem"]})]  # 2nd seed: unused
    roots = {"tokyo_xs": embedded_root / "tokyo_xs" / "test", "val": embedded_root / "sf_xs" / "val"}
    files = figures.qualitative_retrievals(cells, roots, tmp_path, n_queries=3, top_k=5)
    assert [f.name for f in files] == ["qualitative_retrievals.png", "qualitative_retrievals.pdf"]
    assert_images(files, min_png_bytes=30_000)
    # A dataset no method has predictions for: nothing to draw.
    assert figures.qualitative_retrievals(cells, roots, tmp_path / "none", dataset="sf_xs_test") == []


# --------------------------------------------------------------------------- training places, per study


def test_training_places_sample(embedded_root, tmp_path):
    files = figures.training_places_sample(embedded_root / "gsv_xs", tmp_path, n_places=4, per_place=4)
    assert [f.name for f in files] == ["training_places.png", "training_places.pdf"]
    assert_images(files)
    assert figures.training_places_sample(tmp_path / "absent", tmp_path / "x") == []


def test_write_figures_per_study(studies, tmp_path):
    study = studies["s003_table4_schedulers"]
    cells = [make_cell(c.label, config=c.config.to_dict(), history=synthetic_history(3, 20, 10 + i),
                       study=study.id) for i, c in enumerate(expand_study(study, {"run": {
                           "set": {"training.batches_per_epoch": 4}, "max_epochs": 3}}))]
    names = sorted(f.name for f in figures.write_figures(study, cells, tmp_path))
    assert names == ["s003_table4_schedulers_lr_schedules.pdf", "s003_table4_schedulers_lr_schedules.png",
                     "s003_table4_schedulers_recall_curves.pdf", "s003_table4_schedulers_recall_curves.png"]
    # One scheduler, nothing finished: no figure at all.
    optimizers = studies["s003_table3_optimizers"]
    assert figures.write_figures(optimizers, [make_cell(x, "missing") for x in optimizers.labels],
                                 tmp_path / "empty") == []


def test_write_figures_qualitative_for_listed_study(studies, tokyo_predictions, embedded_root, tmp_path):
    study = studies["s003_table2_poolings"]  # paper 003 Fig. 4: the Table 2 models
    assert list(study.qualitative) == study.labels
    folders = list(tokyo_predictions.values())
    cells = [make_cell(label, predictions={"tokyo_xs": folders[i]}, study=study.id)
             for i, label in enumerate(study.labels)]
    roots = {"train": embedded_root / "gsv_xs", "val": embedded_root / "sf_xs" / "val",
             "tokyo_xs": embedded_root / "tokyo_xs" / "test"}
    files = figures.write_figures(study, cells, tmp_path, roots)
    assert [f.name for f in files] == ["s003_table2_poolings_qualitative.png", "s003_table2_poolings_qualitative.pdf"]
    assert figures.write_figures(study, cells, tmp_path / "no_roots") == []  # no roots: no images to show


def test_seed004_fig4_draws_methods_a_to_d(studies, tokyo_predictions, embedded_root, tmp_path):
    study = studies["s004_fig4_qualitative"]   # A, B: Table VII CosPlace; C: ConvAP MS/MS; D: GeM baseline
    assert [label[0] for label in study.qualitative] == ["A", "B", "C", "D"]
    folders = list(tokyo_predictions.values())
    cells = [make_cell(label, predictions={"tokyo_xs": folders[i % len(folders)]}, study=study.id)
             for i, label in enumerate(study.labels)]
    methods, _ = figures.qualitative.methods_of(cells)
    assert list(methods) == list(study.qualitative)
    roots = {"tokyo_xs": embedded_root / "tokyo_xs" / "test"}
    files = figures.write_figures(study, cells, tmp_path, roots)
    assert [f.name for f in files] == ["s004_fig4_qualitative_qualitative.png", "s004_fig4_qualitative_qualitative.pdf"]
    assert_images(files, min_png_bytes=30_000)


def test_tuning_importances_rank_ties_by_name():
    # Two parameters of equal importance (a 2x2 grid often gives 0.5 each) are drawn in one order,
    # whatever order Optuna returned them in.
    from pipeline.reporting.figures.tuning import ranked

    assert ranked({"weight_decay": 0.5, "lr": 0.5}) == ranked({"lr": 0.5, "weight_decay": 0.5}) \
        == [("lr", 0.5), ("weight_decay", 0.5)]
    assert ranked({"lr": 0.4, "weight_decay": 0.6}) == [("weight_decay", 0.6), ("lr", 0.4)]
