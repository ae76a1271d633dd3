"""Studies: the real experiment files load, expand under both profiles and dedupe; the schema and
layering rules; errors name the file, the key and the cell."""

from __future__ import annotations

import json

from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.config import ConfigError, config_from_layers, config_hash, nest_dotted
from pipeline.profile import ParamsError, roots_layer, run_scale
from pipeline.studies.plan import expand_study, plan
from pipeline.studies.study import DATASETS, METRICS, Study, StudyError, load_studies, load_study

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"
ROOTS = {"train": "/fake/gsv_xs", "val": "/fake/sf_xs/val", "sf_xs_test": "/fake/sf_xs/test",
         "tokyo_xs": "/fake/tokyo_xs/test"}
# One file per results table/figure of the papers (experiments/README.md).
EXPECTED = {
    "s000_table1_losses", "s000_table2_losses", "s000_table3_optimizers", "s000_fig2_pooling",
    "s003_table1_baseline", "s003_table2_poolings", "s003_table3_optimizers", "s003_table4_schedulers",
    "s004_table2_baseline", "s004_table3_losses", "s004_table4_miners", "s004_table5_pairs",
    "s004_table6_aggregators", "s004_table7_top3",
}


@pytest.fixture(scope="module")
def studies() -> list[Study]:
    return load_studies([EXPERIMENTS])


@pytest.fixture(scope="module")
def profiles() -> dict[str, dict[str, Any]]:
    return yaml.safe_load((REPO / "params.yaml").read_text())["profiles"]


@pytest.fixture(scope="module")
def tuned_dir(tmp_path_factory) -> Path:
    """Best params as the tune stage writes them, for studies that use `optimizer: tuned`."""
    out = tmp_path_factory.mktemp("tuning")
    (out / "tune_s003_fig2").mkdir()
    (out / "tune_s003_fig2" / "best_params.json").write_text(json.dumps({
        "adamw": {"lr": 1e-3, "weight_decay": 0.1, "val_recall@1": 50.0},
        "asgd": {"lr": 0.3, "weight_decay": 1e-3, "val_recall@1": 40.0}}))
    return out


@pytest.fixture(scope="module")
def plans(studies, profiles, tuned_dir) -> dict[str, list]:
    return {name: plan(studies, profiles[name], ROOTS, tuned_dir) for name in ("demo", "paper")}


def test_tuned_optimizer_takes_the_best_values_or_says_what_to_run(studies, tuned_dir, tmp_path):
    tuned = next(s for s in studies if s.id == "s003_table3_tuned")
    cells = {c.label: c.config.optimizer for c in expand_study(tuned, tuned_dir=tuned_dir)}
    assert cells["gem / AdamW (tuned)"].name == "adamw" and cells["gem / AdamW (tuned)"].lr == 1e-3
    assert cells["mixvpr / ASGD (tuned)"].name == "asgd" and cells["mixvpr / ASGD (tuned)"].weight_decay == 1e-3
    with pytest.raises(StudyError, match=r"tune_s003_fig2.*not found.*vpr tune run experiments/tune_s003_fig2.yaml"):
        expand_study(tuned, tuned_dir=tmp_path)


def _study(**fields: Any) -> dict[str, Any]:
    doc = {"study": "s999_test", "paper": "003", "reproduces": "Table 9", "title": "test", "kind": "final",
           "base": {"training.epochs": 4}, "seeds": [0]}
    doc.update(fields)
    return doc


def _write(folder: Path, doc: dict[str, Any], name: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name or doc['study']}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# The real suite


def test_every_seed_table_has_a_study_file(studies) -> None:
    ids = {s.id for s in studies}
    assert EXPECTED <= ids
    for s in studies:  # a paper's table, or a study beyond the papers (x_*.yaml)
        assert s.path.stem == s.id and (s.paper in ("000", "003", "004") or (s.id.startswith("x_") and s.paper is None))


def test_published_numbers_are_complete_and_match_cells(studies) -> None:
    for s in studies:
        assert set(s.published) <= set(s.labels), s.id
        if s.reproduces and s.reproduces.startswith("Table"):
            assert set(s.published) == set(s.labels), f"{s.id}: every cell of a table has printed numbers"
        for label, numbers in s.published.items():
            for key, value in numbers.items():
                rows = value.values() if key == "per_epoch" else [value]
                assert key in DATASETS or (key == "per_epoch" and s.kind == "per_epoch")
                for metrics in rows:
                    assert {"R@1", "R@5"} <= set(metrics) <= set(METRICS), (s.id, label)


def test_transcribed_values_spot_checks(studies) -> None:
    by_id = {s.id: s for s in studies}
    assert by_id["s000_table3_optimizers"].published["SGD"]["per_epoch"][9] == {"R@1": 66.2, "R@5": 78.6}
    assert by_id["s000_table1_losses"].published["triplet"]["sf_xs_test"] == {"R@1": 10.1, "R@5": 19.4}
    assert len(by_id["s000_table2_losses"].published["contrastive"]["per_epoch"]) == 10
    assert by_id["s003_table2_poolings"].published["mixvpr"]["tokyo_xs"] == {"R@1": 72.38, "R@5": 84.13}
    assert by_id["s003_table4_schedulers"].published["gem / CyclicLR.triangular2"]["sf_xs_val"]["R@1"] == 58.26
    table6 = by_id["s004_table6_aggregators"].published
    assert table6["mixvpr / AngularMiner + FastAPLoss"]["sf_xs_val"]["R@5"] == 83.918
    assert by_id["s004_table7_top3"].kind == "top_k"
    assert by_id["s003_table2_poolings"].baseline == "avg"


@pytest.mark.parametrize("profile", ["demo", "paper"])
def test_every_study_expands_under_both_profiles(plans, profile, profiles) -> None:
    runs = plans[profile]
    assert len({r.config_hash for r in runs}) == len(runs)
    run_cfg = profiles[profile]["run"]
    size = run_cfg["set"].get("data.image_size")  # the paper profile keeps each study's own sizes
    for run in runs:
        cfg = run.config
        if size:
            assert list(cfg.data.image_size) == size and list(cfg.evaluation.resize) == size
        assert cfg.data.train_root == ROOTS["train"] and cfg.data.val_root == ROOTS["val"]
        assert cfg.data.test_roots == {"sf_xs_test": ROOTS["sf_xs_test"], "tokyo_xs": ROOTS["tokyo_xs"]}
        if run_cfg.get("max_epochs"):
            assert cfg.training.epochs <= run_cfg["max_epochs"]
        for cell in run.cells:
            assert cell.config_hash == run.config_hash == config_hash(cell.config)


def test_paper_profile_keeps_the_papers_setup(plans) -> None:
    cells = {(c.study, c.label): c.config for r in plans["paper"] for c in r.cells}
    assert cells[("s003_table2_poolings", "avg")].training.epochs == 30
    assert cells[("s004_table3_losses", "triplet")].training.epochs == 8
    assert cells[("s000_table1_losses", "triplet")].loss.margin == 1.0
    cyclic = cells[("s003_table4_schedulers", "mixvpr / CyclicLR.triangular2")]
    assert (cyclic.scheduler.name, cyclic.scheduler.base_lr, cyclic.optimizer.name) == ("cyclic", 1e-3, "adam")
    assert cells[("s003_table3_optimizers", "gem / AdamW")].optimizer.weight_decay == 0.1
    assert all(c.model.pretrained == ("dinov2" if c.model.is_vit else "imagenet") for c in cells.values())
    assert all(list(c.data.image_size) == [320, 320] for (study, _), c in cells.items() if study.startswith("s"))
    boq = cells[("x_modern_aggregators", "DINOv2-B / BoQ")]   # the authors' sizes: train 224, test 322
    assert list(boq.data.image_size) == [224, 224] and list(boq.evaluation.resize) == [322, 322]


def test_shared_cells_dedupe_across_studies(plans) -> None:
    for runs in plans.values():
        serving = {(c.study, c.label): r for r in runs for c in r.cells}
        # Seed 003: Table 3's GeM + Adam row is Table 4's GeM + MultiStepLR row.
        table3_adam = serving[("s003_table3_optimizers", "gem / Adam")]
        assert table3_adam is serving[("s003_table4_schedulers", "gem / MultiStepLR")]
        assert serving[("s003_table1_baseline", "avg")] is serving[("s003_table2_poolings", "avg")]
        # Seed 000: Tables 1 and 2 are the same runs; Table 3's Adam row is the multisimilarity row.
        run = serving[("s000_table1_losses", "multisimilarity")]
        assert run.studies == ["s000_table1_losses", "s000_table2_losses", "s000_table3_optimizers"]
        # Seed 004: the baseline row of Tables III, IV and V.
        assert serving[("s004_table3_losses", "multisimilarity")] is serving[
            ("s004_table5_pairs", "MultiSimilarityMiner + MultiSimilarityLoss")]
        assert table3_adam is not serving[("s003_table3_optimizers", "gem / AdamW")]
    # The demo cap makes an 8- and a 30-epoch run of one config the same run; the paper keeps both.
    for name, same in (("demo", True), ("paper", False)):
        serving = {(c.study, c.label): r for r in plans[name] for c in r.cells}
        assert (serving[("s004_table2_baseline", "gem")] is serving[("s004_table3_losses", "multisimilarity")]) is same


# ---------------------------------------------------------------------------------------------
# Schema, labels, layering


def test_grid_times_variants_labels_and_layer_order(tmp_path: Path) -> None:
    doc = _study(
        base={"optimizer": {"name": "sgd", "lr": 0.01}},
        grid={"model.aggregator.name": ["avg", "gem"], "optimizer.lr": [0.1, 1.0e-4]},
        variants=[{"label": "plain", "set": {}},
                  {"label": "adamw", "set": {"optimizer": {"name": "adamw", "weight_decay": 0.1}}}],
        published={"gem / 0.0001 / adamw": {"sf_xs_val": {"R@1": 1.0, "R@5": 2.0}}})
    study = load_study(_write(tmp_path, doc))
    assert study.labels == [f"{a} / {lr} / {v}" for a in ("avg", "gem") for lr in ("0.1", "0.0001")
                            for v in ("plain", "adamw")]
    cells = {c.label: c.config for c in expand_study(study)}
    # Grid point then variant: the variant changes the optimizer's name, so it starts from AdamW's
    # defaults plus what the variant gives (lr 1e-3, not the grid's lr).
    assert cells["gem / 0.1 / plain"].optimizer.model_dump() == {
        "name": "sgd", "lr": 0.1, "weight_decay": 0.001, "momentum": 0.9, "nesterov": False}
    assert (cells["gem / 0.1 / adamw"].optimizer.name, cells["gem / 0.1 / adamw"].optimizer.lr) == ("adamw", 1e-3)
    assert cells["avg / 0.0001 / plain"].model.aggregator.name == "avg"


def test_single_axis_grid_variants_only_and_bare_labels(tmp_path: Path) -> None:
    grid_only = load_study(_write(tmp_path, _study(grid={"loss": ["triplet", {"name": "triplet", "margin": 1.0}]})))
    assert grid_only.labels == ["triplet", "triplet margin=1"]
    variants_only = load_study(_write(tmp_path / "v", _study(variants=[{"label": "A B", "set": {"loss": "ntxent"}}])))
    assert variants_only.labels == ["A B"]
    assert load_study(_write(tmp_path / "b", _study())).labels == ["base"]


def test_seeds_multiply_cells(tmp_path: Path) -> None:
    study = load_study(_write(tmp_path, _study(seeds=[0, 1, 7], grid={"model.aggregator.name": ["avg", "gem"]})))
    cells = expand_study(study)
    assert [(c.label, c.seed) for c in cells] == [(a, s) for a in ("avg", "gem") for s in (0, 1, 7)]
    assert [c.config.seed for c in cells] == [0, 1, 7, 0, 1, 7]
    assert len({c.config_hash for c in cells}) == 6
    assert len(plan([study])) == 6


def test_profile_caps_epochs_and_scales_only(tmp_path: Path) -> None:
    study = load_study(_write(tmp_path, _study(grid={"training.epochs": [2, 10]})))
    profile = {"run": {"set": {"training": {"places_per_batch": 8}, "data.num_workers": 0}, "max_epochs": 3}}
    cells = expand_study(study, profile)
    assert [c.config.training.epochs for c in cells] == [2, 3]
    assert all(c.config.training.places_per_batch == 8 for c in cells)
    assert [c.config.training.epochs for c in expand_study(study, {"run": {"set": {}}})] == [2, 10]
    assert [c.config.training.epochs for c in expand_study(study, {})] == [2, 10]  # no run section


@pytest.mark.parametrize("run, needle", [
    ({"set": {"loss.name": "triplet"}}, "run.set.loss.name"),
    ({"set": {"optimizer": {"lr": 1.0}}}, "run.set.optimizer.lr"),
    ({"set": {"training.epochs": 2}}, "run.set.training.epochs"),
    ({"set": {}, "max_epoch": 2}, "run.max_epoch: unknown key"),
    ({"max_epochs": 0}, "run.max_epochs"),
])
def test_profile_may_not_change_the_comparison(run: dict, needle: str) -> None:
    with pytest.raises(ParamsError, match="params.yaml") as err:
        run_scale({"run": run})
    assert needle in str(err.value)


def test_profile_warmup_is_a_scale_setting() -> None:
    scale = run_scale({"run": {"set": {"scheduler.warmup_steps": 0}, "max_epochs": 2}})
    assert scale.layer == {"scheduler": {"warmup_steps": 0}} and scale.max_epochs == 2


def test_roots_layer_maps_prepare_keys() -> None:
    assert roots_layer(None) == {}
    assert roots_layer({"train": "t", "val": "v", "pitts30k": "p"}) == {
        "data": {"train_root": "t", "val_root": "v", "test_roots": {"pitts30k": "p"}}}


def test_load_studies_skips_tune_files_and_refuses_duplicate_ids(tmp_path: Path) -> None:
    _write(tmp_path / "a", _study())
    (tmp_path / "a" / "tune_lr.yaml").write_text("not: a study\n")
    assert [s.id for s in load_studies([tmp_path / "a", tmp_path / "a" / "s999_test.yaml"])] == ["s999_test"]
    _write(tmp_path / "b", _study())
    with pytest.raises(StudyError, match="defined twice") as err:
        load_studies([tmp_path / "a", tmp_path / "b"])
    assert str(tmp_path / "a" / "s999_test.yaml") in str(err.value)
    assert str(tmp_path / "b" / "s999_test.yaml") in str(err.value)
    with pytest.raises(StudyError, match="no such"):
        load_studies([tmp_path / "missing"])


# ---------------------------------------------------------------------------------------------
# Errors name the file, the key (and the cell)


def _error(tmp_path: Path, doc: dict[str, Any], name: str | None = None) -> str:
    path = _write(tmp_path, doc, name)
    with pytest.raises(ConfigError) as err:
        load_study(path)
    message = str(err.value)
    assert str(path) in message
    return message


def test_unknown_component_name_lists_valid_names(tmp_path: Path) -> None:
    msg = _error(tmp_path, _study(base={"loss": {"name": "arcface"}}))
    assert "cell 'base'" in msg and "loss.name: unknown loss 'arcface'" in msg
    assert "valid: contrastive, triplet, multisimilarity, angular, fastap, ntxent" in msg
    msg = _error(tmp_path, _study(variants=[{"label": "X", "set": {"miner.name": "hardest"}}]))
    assert "cell 'X'" in msg and "miner.name: unknown miner 'hardest'" in msg and "batchhard" in msg


def test_invalid_grid_value_names_the_cell_and_key(tmp_path: Path) -> None:
    msg = _error(tmp_path, _study(grid={"model.aggregator.name": ["avg", "netvlad"]}))
    assert "cell 'netvlad'" in msg and "model.aggregator.name: unknown aggregator 'netvlad'" in msg
    assert "mixvpr" in msg
    msg = _error(tmp_path, _study(grid={"training.epochs": [5, 0]}))
    assert "cell '0'" in msg and "training.epochs" in msg
    msg = _error(tmp_path, _study(grid={"model.aggregtor.name": ["gem"]}))
    assert "model.aggregtor: unknown key" in msg


@pytest.mark.parametrize("extra, needle", [
    ({"epochs": 3}, "epochs: unknown key (valid: study, paper"),
    ({"kind": "table"}, "kind: must be one of final, per_epoch, top_k"),
    ({"paper": 3}, 'paper: write the paper id as a quoted string, e.g. paper: "003"'),
    ({"seeds": []}, "seeds:"),
    ({"grid": {"optimizer.lr": []}}, "grid['optimizer.lr']"),
    ({"variants": [{"label": "a", "sett": {}}]}, "variants[0].sett: unknown key (valid: label, set)"),
    ({"published": {"base": {"sf_xs_val": {"R@1": 1, "R@5": 2, "R@20": 3}}}},
     "published.base.sf_xs_val['R@20']: unknown key (valid: R@1, R@5, R@10)"),
    ({"published": {"base": {"tokyo": {"R@1": 1, "R@5": 2}}}}, "published.base.tokyo: unknown key"),
    ({"published": {"base": {"sf_xs_val": {"R@1": 1}}}}, "published.base.sf_xs_val['R@5']: required"),
])
def test_schema_errors_name_the_key(tmp_path: Path, extra: dict, needle: str) -> None:
    msg = _error(tmp_path, _study(**extra))
    assert "invalid study" in msg and needle in msg


def test_published_label_must_be_a_cell(tmp_path: Path) -> None:
    doc = _study(grid={"model.aggregator.name": ["avg", "gem"]},
                 published={"GeM": {"sf_xs_val": {"R@1": 1.0, "R@5": 2.0}}})
    msg = _error(tmp_path, doc)
    assert "published['GeM']: not a cell of this study (cells: 'avg', 'gem')" in msg


@pytest.mark.parametrize("extra, needle", [
    ({"study": "other_name"}, "study: must equal the file name"),
    ({"published": {"base": {"per_epoch": {0: {"R@1": 1, "R@5": 2}}}}}, "only for kind per_epoch"),
    ({"baseline": "avg"}, "baseline: 'avg' is not a cell"),
    ({"base": {"seed": 3}}, "base.seed: set seeds with the top-level `seeds:` list"),
    ({"variants": [{"label": "a"}, {"label": "a"}]}, "cell labels must be unique"),
    ({"base": {"optimizer.lr": 0.1, "optimizer": {"lr": 0.2}}}, "base: optimizer.lr: given twice"),
])
def test_cross_field_errors(tmp_path: Path, extra: dict, needle: str) -> None:
    assert needle in _error(tmp_path, _study(**extra), name="s999_test")


def test_yaml_duplicate_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "s999_test.yaml"
    path.write_text('study: s999_test\nstudy: s999_test\npaper: "003"\n')
    with pytest.raises(ConfigError, match="duplicate key 'study'"):
        load_study(path)


# ---------------------------------------------------------------------------------------------
# config_from_layers and dotted keys


def test_config_from_layers_name_replacement_rule() -> None:
    sgd = {"optimizer": {"name": "sgd", "momentum": 0.5}}
    # Same name (or none): merge, momentum kept.
    cfg = config_from_layers([sgd, {"optimizer.lr": 0.01}])
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.momentum) == ("sgd", 0.01, 0.5)
    # A later layer that changes the name starts from Adam's defaults: SGD's lr does not leak.
    cfg = config_from_layers([sgd, {"optimizer.lr": 0.01}, {"optimizer": {"name": "adam"}}])
    assert (cfg.optimizer.name, cfg.optimizer.lr) == ("adam", 1e-3)
    # Within one layer, name and params go together in any key order.
    cfg = config_from_layers([sgd, {"optimizer.lr": 1e-4, "optimizer.name": "adam"}])
    assert (cfg.optimizer.name, cfg.optimizer.lr) == ("adam", 1e-4)
    # Bare-name shorthand, then a param of it in a later layer.
    cfg = config_from_layers([{"loss": "triplet"}, {"loss.margin": 1.0}])
    assert (cfg.loss.name, cfg.loss.margin) == ("triplet", 1.0)
    assert config_from_layers([]) == config_from_layers([None])


def test_config_from_layers_errors_name_source_and_key() -> None:
    with pytest.raises(ConfigError, match=r"\(my/source\)") as err:
        config_from_layers([{"optimizer.name": "adamx"}], source="my/source")
    assert "optimizer.name: unknown optimizer 'adamx' (valid: adam, adamw, sgd, asgd)" in str(err.value)
    with pytest.raises(ConfigError, match="single mapping"):
        config_from_layers({"seed": 1})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="must be a mapping"):
        config_from_layers([["seed", 1]])  # type: ignore[list-item]


def test_nest_dotted_mixes_forms_and_refuses_repeats() -> None:
    assert nest_dotted({"optimizer.lr": 1e-3, "optimizer": {"name": "adam"}, "model": {"aggregator.name": "gem"}}) == {
        "optimizer": {"lr": 1e-3, "name": "adam"}, "model": {"aggregator": {"name": "gem"}}}
    assert nest_dotted({"loss": "triplet", "loss.margin": 1.0}) == {"loss": {"name": "triplet", "margin": 1.0}}
    assert nest_dotted({"loss.margin": 1.0, "loss": "triplet"}) == {"loss": {"margin": 1.0, "name": "triplet"}}
    # Test-set names are names, not paths.
    assert nest_dotted({"data.test_roots": {"pitts.30k": "p"}}) == {"data": {"test_roots": {"pitts.30k": "p"}}}
    for bad, needle in (({"seed": 1, "seed.x": 2}, "seed: given a value"),
                        ({"a..b": 1}, "empty part"),
                        ({"training.epochs": 1, "training": {"epochs": 2}}, "training.epochs: given twice")):
        with pytest.raises(ConfigError, match=needle):
            nest_dotted(bad)


# ---------------------------------------------------------------------------------------------
# Qualitative cells and the recorded plan


def test_qualitative_cells_are_validated_against_the_labels(tmp_path: Path) -> None:
    grid = {"model.aggregator.name": ["avg", "gem"]}
    study = load_study(_write(tmp_path, _study(grid=grid, qualitative=["gem"])))
    assert study.qualitative == ("gem",)
    assert load_study(_write(tmp_path / "b", _study(grid=grid))).qualitative == ()
    with pytest.raises(StudyError) as err:
        load_study(_write(tmp_path / "c", _study(grid=grid, qualitative=["gem", "mixvpr"])))
    assert "qualitative[1]: 'mixvpr' is not a cell" in str(err.value) and "'avg', 'gem'" in str(err.value)


def test_recorded_plan_reads_back_the_runs_the_sweep_planned(tmp_path: Path) -> None:
    from pipeline.studies.plan import load_recorded_plan, write_plan

    studies = [load_study(_write(tmp_path, _study(grid={"model.aggregator.name": ["avg", "gem"]}, seeds=[0, 1])))]
    planned = plan(studies, {"run": {"max_epochs": 2}}, ROOTS, None)
    path = write_plan(planned, tmp_path / "sweep" / "plan.json", profile="tiny")
    recorded = load_recorded_plan(path)
    assert [r.config_hash for r in recorded] == [p.config_hash for p in planned]
    for got, want in zip(recorded, planned):
        assert config_hash(got.config) == want.config_hash  # the config read back is the one hashed
        assert [(c.study, c.label, c.seed) for c in got.cells] == [(c.study, c.label, c.seed) for c in want.cells]
    data = json.loads(path.read_text())
    assert data["profile"] == "tiny" and data["runs"][0]["config"]["training"]["epochs"] == 2
    assert data["runs"][0]["config"]["data"]["test_roots"]["tokyo_xs"] == ROOTS["tokyo_xs"]


def test_a_missing_recorded_plan_says_which_stage_writes_it(tmp_path: Path) -> None:
    from pipeline.errors import UserError
    from pipeline.studies.plan import load_recorded_plan

    with pytest.raises(UserError, match="run the train stage"):
        load_recorded_plan(tmp_path / "plan.json")
