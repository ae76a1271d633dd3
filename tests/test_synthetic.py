"""The embedded-data generator: layouts, names, geometry, determinism and the output-folder rules."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.data import synthetic
from pipeline.data.formats import (ORIGINAL_CSV_COLUMNS, format_image_name, gsv_cities_image_name,
                                   parse_image_name, read_city_csv)
from pipeline.data.catalog import SPLITS
from pipeline.data.synthetic import SCALES, SynthScale, generate
from pipeline.data.synthetic.layout import eval_specs
from pipeline.errors import UserError

EVAL_SPLITS = ["sf_xs/val", "sf_xs/test", "tokyo_xs/test"]
TINY = SynthScale(cities=2, places_per_city=6, min_images=4, max_images=5, val_places=14,
                  test_places=14, tokyo_places=10, db_per_place=2, val_query_fraction=1.0,
                  test_query_fraction=0.8, tokyo_query_fraction=0.8, image_size=24)


@pytest.fixture
def tiny(monkeypatch):
    """A few-dozen-image preset, so generating several times stays fast."""
    monkeypatch.setitem(SCALES, "tiny", TINY)
    return "tiny"


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _utm(paths: list[Path]) -> np.ndarray:
    return np.array([[parse_image_name(p).utm_east, parse_image_name(p).utm_north] for p in paths])


def _pixels(path: Path, dtype=np.uint8) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img, dtype=dtype)


def _eval_files(root: Path, split: str) -> tuple[list[Path], list[Path]]:
    return sorted((root / split / "database").glob("*.jpg")), sorted((root / split / "queries").glob("*.jpg"))


# --- demo scale (the session's shared embedded data, read-only) ----------------------------------

def test_demo_layout_and_marker(embedded_root):
    top = sorted(p.name for p in embedded_root.iterdir())
    assert top == ["gsv_xs", "sf_xs", "synth.json", "tokyo_xs"]  # no gsv_cities unless asked
    assert sorted(p.name for p in (embedded_root / "gsv_xs").iterdir()) == ["train"]
    cities = sorted(p.name for p in (embedded_root / "gsv_xs/train").iterdir())
    assert len(cities) == SCALES["demo"].cities
    assert sorted(p.name for p in (embedded_root / "sf_xs").iterdir()) == ["test", "val"]
    assert sorted(p.name for p in (embedded_root / "tokyo_xs").iterdir()) == ["test"]
    for split in EVAL_SPLITS:
        assert sorted(p.name for p in (embedded_root / split).iterdir()) == ["database", "queries"]
    marker = json.loads((embedded_root / "synth.json").read_text())
    assert marker["complete"] and marker["scale"] == "demo" and marker["image_size"] == 32
    assert marker["version"] == synthetic.GENERATOR_VERSION
    train = marker["counts"]["gsv_xs/train"]
    assert train["images"] == len(list((embedded_root / "gsv_xs/train").rglob("*.jpg")))
    for split in EVAL_SPLITS:
        db, q = _eval_files(embedded_root, split)
        assert (marker["counts"][split]["database"], marker["counts"][split]["queries"]) == (len(db), len(q))
    assert 100 <= marker["counts"]["sf_xs/val"]["queries"] <= 300
    with Image.open(next((embedded_root / "sf_xs/val/queries").glob("*.jpg"))) as img:
        assert img.format == "JPEG" and img.size == (32, 32) and img.mode == "RGB"


def test_demo_names_parse_and_round_trip(embedded_root):
    for path in (embedded_root / "gsv_xs/train").rglob("*.jpg"):
        rec = parse_image_name(path)
        assert rec.place_id is not None and rec.city == path.parent.name
        assert rec.utm_zone and rec.utm_band and rec.lat is not None and len(rec.date) == 6
        assert format_image_name(rec) == path.name
    for split in EVAL_SPLITS:
        db, q = _eval_files(embedded_root, split)
        panoids = [parse_image_name(p).panoid for p in db + q]
        assert len(set(panoids)) == len(panoids)  # names unique across database and queries
        for path in db + q:
            rec = parse_image_name(path)
            assert rec.place_id is None and path.name.endswith("@@.jpg")
            assert format_image_name(rec) == path.name


def test_demo_training_places_far_apart_with_enough_views(embedded_root):
    for city_dir in (embedded_root / "gsv_xs/train").iterdir():
        places: dict[int, list[Path]] = defaultdict(list)
        for path in city_dir.glob("*.jpg"):
            places[parse_image_name(path).place_id].append(path)
        assert len(places) >= 100
        assert min(len(v) for v in places.values()) >= 4
        utm = np.concatenate([_utm(v) for v in places.values()])
        owner = np.concatenate([[pid] * len(v) for pid, v in places.items()])
        dist = np.linalg.norm(utm[:, None] - utm[None], axis=2)
        assert dist[owner[:, None] == owner[None]].max() < 10  # views of a place stay together
        assert dist[owner[:, None] != owner[None]].min() >= 100  # places are >= 100 m apart


def test_demo_queries_have_positives_within_25m(embedded_root):
    for split in EVAL_SPLITS:
        db, q = _eval_files(embedded_root, split)
        dist = np.linalg.norm(_utm(q)[:, None] - _utm(db)[None], axis=2)
        has_positive = (dist <= 25).any(axis=1)
        if split == "sf_xs/val":
            assert has_positive.all()
        else:  # like SF-XS test (34/1000), a few queries have no positive
            assert 0.0 < 1 - has_positive.mean() <= 0.05
        assert (dist <= 25).sum(axis=1).max() <= SCALES["demo"].db_per_place  # only their own place


def test_demo_eval_coordinates_plausible(embedded_root):
    sf = parse_image_name(next((embedded_root / "sf_xs/val/queries").glob("*.jpg")))
    tokyo = parse_image_name(next((embedded_root / "tokyo_xs/test/queries").glob("*.jpg")))
    assert (sf.utm_zone, sf.utm_band) == ("10", "S") and abs(sf.lat - 37.77) < 0.1
    assert (tokyo.utm_zone, tokyo.utm_band) == ("54", "S") and abs(tokyo.lon - 139.65) < 0.1


# --- determinism ---------------------------------------------------------------------------------

def test_same_seed_same_files_any_worker_count(tmp_path, tiny):
    a = generate(tmp_path / "a", seed=7, scale=tiny, progress=False, workers=1)
    b = generate(tmp_path / "b", seed=7, scale=tiny, progress=False, workers=2)
    assert a == b
    files = _files(tmp_path / "a")
    assert files == _files(tmp_path / "b") and len(files) > 100
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    sample = [f for f in files if f.endswith(".jpg")][::17]
    for rel in sample:
        assert np.array_equal(_pixels(tmp_path / "a" / rel), _pixels(tmp_path / "b" / rel))


def test_different_seed_different_data(tmp_path, tiny):
    generate(tmp_path / "a", seed=0, scale=tiny, progress=False)
    generate(tmp_path / "b", seed=1, scale=tiny, progress=False)
    files_a, files_b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert not (set(files_a) & set(files_b)) - {"synth.json"}
    img_a = _pixels(tmp_path / "a" / files_a[0], np.int16)
    img_b = _pixels(tmp_path / "b" / files_b[0], np.int16)
    assert np.abs(img_a - img_b).mean() > 5


def test_image_size_overrides_the_preset(tmp_path, tiny):
    summary = generate(tmp_path / "out", seed=0, scale=tiny, image_size=40, progress=False)
    assert summary["image_size"] == 40
    with Image.open(next((tmp_path / "out/sf_xs/test/database").glob("*.jpg"))) as img:
        assert img.size == (40, 40)


def test_views_of_a_place_vary(tmp_path, tiny):
    generate(tmp_path / "out", seed=0, scale=tiny, progress=False)
    city = sorted((tmp_path / "out/gsv_xs/train").iterdir())[0]
    views: dict[int, list[np.ndarray]] = defaultdict(list)
    for path in sorted(city.glob("*.jpg")):
        views[parse_image_name(path).place_id].append(_pixels(path, np.float32))
    first = next(iter(views.values()))
    assert all(np.abs(first[0] - other).mean() > 3 for other in first[1:])


# --- GSV-Cities layout ---------------------------------------------------------------------------

def test_gsv_cities_layout_original_schema(tmp_path, tiny):
    root = tmp_path / "out"
    summary = generate(root, seed=3, scale=tiny, gsv_cities_layout=True, progress=False)
    csvs = sorted((root / "gsv_cities/Dataframes").glob("*.csv"))
    xs_cities = sorted(p.name for p in (root / "gsv_xs/train").iterdir())
    assert [p.stem for p in csvs] == xs_cities
    xs_by_panoid = {parse_image_name(p).panoid: p for p in (root / "gsv_xs/train").rglob("*.jpg")}
    total = 0
    for csv in csvs:
        df = pd.read_csv(csv, dtype={"panoid": str})
        assert list(df.columns) == ORIGINAL_CSV_COLUMNS
        assert (df["city_id"] == csv.stem).all() and df.groupby("place_id").size().min() >= 4
        images = root / "gsv_cities/Images" / csv.stem
        assert len(list(images.glob("*.jpg"))) == len(df)
        for row in df.itertuples():
            name = gsv_cities_image_name(csv.stem, row.place_id, row.year, row.month, row.northdeg,
                                         row.lat, row.lon, row.panoid)
            assert (images / name).read_bytes() == xs_by_panoid[row.panoid].read_bytes()
            assert parse_image_name(xs_by_panoid[row.panoid]).place_id == row.place_id
        read = read_city_csv(csv)  # the loader's reader accepts it and recovers the UTM positions
        assert read.attrs["schema"] == "original"
        xs_utm = _utm([xs_by_panoid[p] for p in read["panoid"]])
        assert np.abs(read[["utm_east", "utm_north"]].to_numpy() - xs_utm).max() < 0.1
        total += len(df)
    assert total == summary["counts"]["gsv_xs/train"]["images"]


# --- output folder rules and errors --------------------------------------------------------------

def test_unknown_scale_lists_valid_names(tmp_path):
    with pytest.raises(UserError, match="demo, small, medium, large"):
        generate(tmp_path / "out", scale="huge", progress=False)
    assert not (tmp_path / "out").exists()


def test_refuses_non_empty_foreign_folder(tmp_path, tiny):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(UserError, match="not empty"):
        generate(out, scale=tiny, progress=False)
    assert _files(out) == ["thesis.tex"]


def test_regenerates_over_previous_generation(tmp_path, tiny):
    out = tmp_path / "out"
    generate(out, seed=0, scale=tiny, progress=False)
    stray = out / "sf_xs/val/queries/stray.jpg"
    stray.write_bytes(b"old")
    generate(out, seed=1, scale=tiny, progress=False)
    assert not stray.exists()
    generate(tmp_path / "fresh", seed=1, scale=tiny, progress=False)
    assert _files(out) == _files(tmp_path / "fresh")
    # a generation folder with a foreign entry beside it is not ours to clear
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        generate(out, seed=0, scale=tiny, progress=False)
    assert (out / "notes.txt").exists() and (out / "synth.json").exists()


def test_empty_existing_folder_is_fine(tmp_path, tiny):
    out = tmp_path / "out"
    out.mkdir()
    summary = generate(out, seed=0, scale=tiny, progress=False)
    assert json.loads((out / "synth.json").read_text()) == summary


def test_embedded_evaluation_splits_are_the_catalog_splits():
    # every split the reports know has an embedded stand-in, and no other
    assert set(eval_specs(SCALES["demo"])) == set(SPLITS)


def test_real_resolution_images_are_height_by_width(tmp_path, tiny):
    summary = generate(tmp_path / "out", seed=0, scale=tiny, image_size="40x56", progress=False)
    assert summary["image_size"] == [40, 56]
    for folder in ("gsv_xs/train", "sf_xs/val/queries", "tokyo_xs/test/database"):
        path = next((tmp_path / "out" / folder).rglob("*.jpg"))
        with Image.open(path) as img:
            assert (img.height, img.width) == (40, 56)


def test_cli_accepts_height_x_width_and_names_a_bad_size(tmp_path):
    cmd = [sys.executable, "-m", "pipeline.cli", "data", "synth", "--quiet", "--out"]
    bad = subprocess.run(cmd + [str(tmp_path / "bad"), "--image-size", "480by640"], capture_output=True, text=True)
    assert bad.returncode == 2 and "480by640" in bad.stderr and "HxW" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1  # a user error: one line, no traceback
    with pytest.raises(UserError, match="at least 16 pixels"):
        generate(tmp_path / "small", image_size="8x640", progress=False)
