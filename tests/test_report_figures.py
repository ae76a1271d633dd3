"""Tests of pipeline.reporting.figures on real data: embedded datasets, predictions of real (tiny,
untrained) models, LR trajectories of the real schedulers; histories are synthetic."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.data.datasets import EvalDataset, TrainPlacesDataset
from pipeline.evaluation import EvaluationResult, evaluate
from pipeline.config import ModelConfig
from pipeline.models import build_model
from pipeline.reporting import figures
from pipeline.reporting.collect import CellResult
from pipeline.sweeps.study import expand_study, load_studies

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
        out.append({"epoch": e, "train_loss": 1.0 / (e + 1), "lr": lr, "val_recall@1": r1,
                    "val_recall@5": min(100.0, r1 + 15), "val_recall@10": min(100.0, r1 + 22)})
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


ADAM = {"name": "adam", "lr": 2e-4}


def config(scheduler: dict, epochs: int = 15, optimizer: dict = ADAM) -> dict:
    """A partial run config; the recipe fills the rest. Warmup off unless given (the recipe's
    multistep has 600 steps, which a layer keeping the name would inherit)."""
    scheduler = {"warmup_steps": 0, **scheduler}
    return {"optimizer": optimizer, "scheduler": scheduler, "training": {"epochs": epochs}}


def test_lr_schedule_multistep_matches_formula():
    sched = figures.lr_schedule(config({"name": "multistep", "milestones": [5, 10, 15], "gamma": 0.3}), 7)
    assert sched.steps_per_epoch == 7 and len(sched.lr) == 15 * 7 and sched.steps_source == "given"
    for epoch in (0, 4, 5, 9, 10, 14):
        expected = 2e-4 * 0.3 ** sum(epoch >= m for m in (5, 10, 15))
        for batch in (0, 6):  # constant within an epoch
            assert sched.at(epoch, batch) == pytest.approx(expected, rel=1e-9)
    assert sched.epoch[7 * 3 + 2] == pytest.approx(3 + 2 / 7)


def test_lr_schedule_cosine_matches_formula():
    sched = figures.lr_schedule(config({"name": "cosine", "T_max": 5, "eta_min": 1e-6}), 4)
    for epoch in range(15):  # torch's closed form, periodic past T_max
        expected = 1e-6 + (2e-4 - 1e-6) * (1 + math.cos(math.pi * epoch / 5)) / 2
        assert sched.at(epoch, 3) == pytest.approx(expected, rel=1e-6)


def test_lr_schedule_cyclic_triangular2_matches_formula():
    spe = 10
    sched = figures.lr_schedule(config({"name": "cyclic", "mode": "triangular2", "base_lr": 1e-3,
                                        "max_lr": 0.1, "step_size_up_epochs": 1, "interval": "step"}), spe)
    step = spe  # half-cycle of one epoch
    for k in (0, 3, 10, 15, 20, 27, 40, 55, 99, 149):
        cycle = math.floor(1 + k / (2 * step))
        x = abs(k / step - 2 * cycle + 1)
        expected = 1e-3 + (0.1 - 1e-3) * max(0.0, 1 - x) / 2 ** (cycle - 1)
        assert sched.lr[k] == pytest.approx(expected, rel=1e-9), k


def test_lr_schedule_warmup_and_plateau():
    warm = figures.lr_schedule(config({"name": "multistep", "milestones": [5], "warmup_steps": 20}), 10)
    for k in (0, 9, 19):
        assert warm.lr[k] == pytest.approx(2e-4 * (k + 1) / 20)
    assert warm.lr[20] == pytest.approx(2e-4) and warm.at(5) == pytest.approx(2e-4 * 0.3)
    # A flat loss: ReduceLROnPlateau cuts after patience + 1 epochs without improvement.
    flat = figures.lr_schedule(config({"name": "plateau", "patience": 2, "factor": 0.1}, epochs=8), 3)
    assert [round(flat.at(e) / 2e-4, 6) for e in range(8)] == [1, 1, 1, 1, 0.1, 0.1, 0.1, 0.01]
    # A run's own history drives it instead: a loss that keeps falling never triggers it.
    falling = [{"train_loss": 1.0 / (e + 1)} for e in range(8)]
    kept = figures.lr_schedule(config({"name": "plateau", "patience": 2, "factor": 0.1}, epochs=8), 3,
                               metrics=falling)
    assert np.allclose(kept.lr, 2e-4)


def test_lr_schedule_steps_per_epoch_from_config_and_data(embedded_root):
    cfg = config({"name": "none"}, epochs=2)
    cfg["training"]["batches_per_epoch"] = 6
    assert figures.lr_schedule(cfg).steps_per_epoch == 6
    train = embedded_root / "gsv_xs"
    cfg = config({"name": "none"}, epochs=2)
    cfg["data"] = {"train_root": str(train)}
    cfg["training"]["places_per_batch"] = 16
    sched = figures.lr_schedule(cfg)
    assert sched.steps_per_epoch == len(TrainPlacesDataset(train, 4, 4, image_size=(1, 1))) // 16
    cfg["data"] = {"train_root": "/nonexistent/gsv_xs"}
    assert figures.lr_schedule(cfg).steps_source == "assumed"


def test_lr_schedules_one_line_per_schedule(studies, tmp_path, monkeypatch):
    study = studies["s003_table4_schedulers"]
    cells = []
    for cell in expand_study(study):
        cfg = cell.config.to_dict()
        sched = figures.lr_schedule(cfg, 20)
        # The LR of each epoch's last batch (the trainer records the LR after it, before
        # step_epoch: the same value for per-epoch schedulers, one step later for cyclic).
        history = [{"epoch": e, "lr": float(sched.lr[(e + 1) * 20 - 1])} for e in range(cfg["training"]["epochs"])]
        cells.append(make_cell(cell.label, config=cfg, history=history, study=study.id))
    cells[-1] = make_cell(cells[-1].label, "failed", study=study.id)  # no config: skipped
    calls = []
    real = figures.lr_schedule
    monkeypatch.setattr(figures, "lr_schedule", lambda *a, **k: calls.append(a) or real(*a, **k))
    files = figures.lr_schedules(cells, tmp_path, steps_per_epoch=20)
    assert [f.name for f in files] == ["lr_schedules.png", "lr_schedules.pdf"]
    assert len(calls) == 4  # GeM and MixVPR share each of the four schedules
    assert_images(files)


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
    study = studies["s003_table2_poolings"]  # seed 003 Fig. 4: the Table 2 models
    assert study.id in figures.QUALITATIVE
    folders = list(tokyo_predictions.values())
    cells = [make_cell(label, predictions={"tokyo_xs": folders[i]}, study=study.id)
             for i, label in enumerate(study.labels)]
    roots = {"train": embedded_root / "gsv_xs", "val": embedded_root / "sf_xs" / "val",
             "tokyo_xs": embedded_root / "tokyo_xs" / "test"}
    files = figures.write_figures(study, cells, tmp_path, roots)
    assert [f.name for f in files] == ["s003_table2_poolings_qualitative.png", "s003_table2_poolings_qualitative.pdf"]
    assert figures.write_figures(study, cells, tmp_path / "no_roots") == []  # no roots: no images to show
