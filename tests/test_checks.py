"""`vpr data check` and `vpr data index` on the embedded data, clean and corrupted."""

from __future__ import annotations

import shutil
import subprocess
import sys

from pipeline.data.checks import check_dataset
from pipeline.data.index import read_positives


def _vpr(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, cwd=cwd)


def _snapshot(root):
    return {p: p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


def test_synth_then_check_reports_no_errors(embedded_root):
    before = _snapshot(embedded_root)
    result = _vpr("data", "check", str(embedded_root), "--quiet")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 error(s)" in result.stdout
    for key in ("gsv_xs/train", "sf_xs/val", "sf_xs/test", "tokyo_xs/test"):
        assert key in result.stdout
    assert _snapshot(embedded_root) == before  # check never modifies the data


def test_every_problem_reported_at_once(embedded_copy):
    val_db = sorted((embedded_copy / "sf_xs" / "val" / "database").iterdir())
    truncated, zero = val_db[0], val_db[1]
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 3])
    zero.write_bytes(b"")
    no_coords = embedded_copy / "sf_xs" / "test" / "queries" / "holiday_photo.jpg"
    shutil.copy(val_db[2], no_coords)
    shutil.rmtree(embedded_copy / "tokyo_xs" / "test")
    garbage = embedded_copy / "sf_xs" / "val" / "queries" / "@1@2@10@S@0@0@p@@0@@@@2020@@.jpg"
    garbage.write_bytes(b"not a jpeg at all")

    report = check_dataset(embedded_copy, progress=False)
    text = "\n".join(map(str, report.errors))
    assert not report.ok
    assert f"{truncated}: unreadable or truncated" in text
    assert f"{zero}: zero-byte file" in text
    assert f"{no_coords}: image name has no coordinates" in text
    assert f"{garbage}: unreadable" in text
    assert "tokyo_xs/test: missing split folder" in text

    result = _vpr("data", "check", str(embedded_copy), "--quiet")
    assert result.returncode == 1
    for needle in (truncated.name, zero.name, "holiday_photo.jpg", "missing split folder"):
        assert needle in result.stdout


def test_deleted_queries_folder_and_small_place(embedded_copy):
    shutil.rmtree(embedded_copy / "sf_xs" / "val" / "queries")
    city = sorted((embedded_copy / "gsv_xs" / "train").iterdir())[0]
    images = sorted(city.iterdir())
    place_tag = images[0].name.split("@")[14]
    same_place = [p for p in images if p.name.split("@")[14] == place_tag]
    for p in same_place[1:]:
        p.unlink()
    report = check_dataset(embedded_copy, progress=False)
    errors = "\n".join(map(str, report.errors))
    warnings = "\n".join(map(str, report.warnings))
    assert "sf_xs/val/queries: missing folder" in errors
    assert "has 1 image(s), fewer than the minimum 4" in warnings


def test_missing_root_is_an_error_naming_it(tmp_path):
    result = _vpr("data", "check", str(tmp_path / "nope"), "--quiet")
    assert result.returncode == 1 and "nope: dataset root does not exist" in result.stdout


def test_index_writes_manifests_and_positives(embedded_root, tmp_path):
    out = tmp_path / "index"
    result = _vpr("data", "index", str(embedded_root), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert (out / "gsv_xs_train_manifest.csv").exists()
    positives = read_positives(out / "sf_xs_val_positives.txt")
    from pipeline.data.datasets import EvalDataset

    ds = EvalDataset(embedded_root / "sf_xs" / "val", image_size=None)
    assert len(positives) == ds.num_queries
    assert all(list(a) == list(b) for a, b in zip(positives, ds.positives))
