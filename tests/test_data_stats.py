"""Dataset statistics (paper 004 Table I) on the real embedded datasets: `vpr data stats` and the
report's published-vs-ours table. Counts are checked against the files on disk, positives against
a brute-force distance computation from the UTM in the file names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import vpr
from pipeline.data.stats import dataset_stats, split_stats
from pipeline.errors import ConfigError
from pipeline.reporting.tables.datasets import (dataset_table, load_dataset_table, stats_of_roots,
                                                write_dataset_tables)

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def _utm(path: Path) -> tuple[float, float]:
    parts = path.name.split("@")        # @UTM east@UTM north@... (the datasets' naming)
    return float(parts[1]), float(parts[2])


def _no_positive(split: Path, radius: float = 25.0) -> int:
    database = np.array([_utm(p) for p in (split / "database").glob("*.jpg")])
    queries = np.array([_utm(p) for p in (split / "queries").glob("*.jpg")])
    dist = np.linalg.norm(queries[:, None, :] - database[None, :, :], axis=2)
    return int(np.sum(~np.any(dist <= radius, axis=1)))


def test_eval_split_counts_match_the_files(embedded_root):
    split = embedded_root / "tokyo_xs" / "test"
    stats = split_stats("tokyo_xs", split)
    assert stats.kind == "eval"
    assert stats.queries == len(list((split / "queries").glob("*.jpg")))
    assert stats.database == len(list((split / "database").glob("*.jpg")))
    assert stats.images == stats.queries + stats.database
    assert stats.queries_without_positives == _no_positive(split) > 0   # the embedded data has some
    assert stats.places is None and stats.cities is None


def test_training_set_counts_places_and_cities(embedded_root):
    train = embedded_root / "gsv_xs"
    stats = split_stats("train", train, training=True)
    images = sorted((train / "train").glob("*/*.jpg"))
    places = {(p.parent.name, p.name.split("@")[-2].split("_")[0]) for p in images}
    assert stats.images == len(images) and stats.places == len(places)
    assert stats.cities == len({p.parent.name for p in images})
    assert stats.queries is None


def test_vpr_data_stats_prints_table_and_json(embedded_root, tmp_path):
    table = vpr(tmp_path, "data", "stats", str(embedded_root))
    assert table.returncode == 0, table.stderr
    head, *rows = table.stdout.strip().splitlines()
    assert head.split() == ["split", "images", "places", "cities", "queries", "database", "no", "positive"]
    assert [r.split()[0] for r in rows] == ["gsv_xs/train", "sf_xs/test", "sf_xs/val", "tokyo_xs/test"]
    as_json = vpr(tmp_path, "data", "stats", str(embedded_root / "sf_xs"), "--json", "--radius", "0")
    assert as_json.returncode == 0, as_json.stderr
    by_split = {d["split"]: d for d in json.loads(as_json.stdout)}
    assert set(by_split) == {"sf_xs/test", "sf_xs/val"}
    # Radius 0: only a database image at the query's exact position counts.
    assert by_split["sf_xs/val"]["queries_without_positives"] == _no_positive(embedded_root / "sf_xs" / "val", 0.0)
    assert [s.to_dict() for s in dataset_stats([embedded_root / "sf_xs"], radius=0)] == list(by_split.values())
    missing = vpr(tmp_path, "data", "stats", str(tmp_path / "absent"))
    assert missing.returncode == 2 and "absent" in missing.stderr and "Traceback" not in missing.stderr


def test_table_one_paper_beside_ours(embedded_root, tmp_path):
    spec = load_dataset_table(EXPERIMENTS / "datasets" / "s004_table1.yaml")
    roots = {"train": str(embedded_root / "gsv_xs"), "val": str(embedded_root / "sf_xs" / "val"),
             "tokyo_xs": str(embedded_root / "tokyo_xs" / "test")}             # no SF-XS test root
    table = dataset_table(spec, stats_of_roots(roots))
    assert table.entry("tokyo_xs", "Paper queries").text == "315"
    assert table.entry("sf_xs_test", "Paper database").text == "27,191"
    ours = split_stats("tokyo_xs", roots["tokyo_xs"])
    assert table.entry("tokyo_xs", "Ours queries").text == f"{ours.queries:,}"
    assert table.entry("train", "Ours database").text == f"{split_stats('t', roots['train'], training=True).images:,}"
    assert table.entry("sf_xs_test", "Ours queries").missing      # no root: an explicit missing cell
    assert "no dataset root for SF XS test" in table.caption
    sections = write_dataset_tables(EXPERIMENTS / "datasets", roots, tmp_path)
    assert "\\toprule" in (tmp_path / "s004_table1.tex").read_text() and "529,506" in "\n".join(sections)


@pytest.mark.parametrize("text, key", [
    ("rows: [{split: sf_xs, name: x}]", "rows.0.split"),
    ("rows: [{split: train, name: x, queries: -1}]", "rows.0.queries"),
    ("rows: [{split: train, name: x, images: 3}]", "images"),
])
def test_bad_dataset_table_names_file_and_key(tmp_path, text, key):
    path = tmp_path / "t1.yaml"
    path.write_text(f'table: t1\npaper: "004"\nreproduces: Table I\ntitle: x\n{text}\n')
    with pytest.raises(ConfigError) as err:
        load_dataset_table(path)
    assert str(path) in str(err.value) and key in str(err.value)
