"""Benchmarks in the two formats they ship in, and the rule of each that decides its ground truth.

Every fixture is made here, file by file, as the reference tools write them; the positives we
compute are compared with a brute-force numpy computation of the reference's rule.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data.benchmarks import BENCHMARKS, benchmark_keys, read_split, split_format
from pipeline.data.formats import FormatError
from pipeline.data.index import DatasetLayoutError, discover
from pipeline.errors import UserError


def _image(path: Path, color: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (color, color, color)).save(path)
    return path


def downloader_name(east: float, north: float, zone: str = "17", letter: str = "T", note: str = "") -> str:
    """A name as VPR-datasets-downloader util.py writes it: 15 fields after a leading '@'."""
    return (f"@{east:010.2f}@{north:010.2f}@{zone}@{letter}@40.44000@-079.99000@pano@0@90@@@@@{note}@.jpg")


def make_downloader(root: Path, db: np.ndarray, queries: np.ndarray, zone: str = "17", letter: str = "T",
                    nested: bool = True) -> Path:
    """<root>/images/test/{database,queries}, images spread over subfolders (the reader searches them)."""
    split = root / "images" / "test"
    for sub, points in (("database", db), ("queries", queries)):
        for i, (east, north) in enumerate(points):
            folder = split / sub / (f"{i % 3:03d}" if nested else "")
            _image(folder / downloader_name(east, north, zone, letter, note=f"{sub}{i}"))
    return root


def brute_force_positives(db: np.ndarray, queries: np.ndarray, radius: float = 25.0) -> list[np.ndarray]:
    """The reference rule (VPR-methods-evaluation test_dataset.py): database images whose UTM
    east/north lie within `radius` metres of the query's, by explicit pairwise distances."""
    dist = np.sqrt(((queries[:, None, :] - db[None, :, :]) ** 2).sum(-1))
    return [np.flatnonzero(row <= radius) for row in dist]


def _by_name(index, db: np.ndarray, queries: np.ndarray) -> list[set[int]]:
    """Positives re-expressed in the fixture's own numbering (the reader sorts files by path)."""
    db_order = [int(p.name.split("@")[14].removeprefix("database")) for p in index.database_paths]
    q_order = [int(p.name.split("@")[14].removeprefix("queries")) for p in index.query_paths]
    out: list[set[int]] = [set() for _ in range(len(queries))]
    for j, pos in zip(q_order, index.positives):
        out[j] = {db_order[i] for i in pos}
    return out


def test_downloader_format_positives_equal_the_reference_rule(tmp_path):
    rng = np.random.default_rng(0)
    db = rng.uniform(0, 200, size=(80, 2)) + [584_000, 4_477_000]
    queries = db[rng.choice(80, 25)] + rng.normal(0, 15, size=(25, 2))
    make_downloader(tmp_path / "pitts30k", db, queries)
    index = read_split(tmp_path / "pitts30k")
    assert split_format(tmp_path / "pitts30k" / "images" / "test") == "downloader"
    assert len(index.database_paths) == 80 and len(index.query_paths) == 25
    expected = [set(p.tolist()) for p in brute_force_positives(db, queries)]
    assert _by_name(index, db, queries) == expected
    assert sum(map(len, expected)) > 25  # the fixture has queries with several positives


def test_the_utm_zone_is_ignored_as_the_reference_ignores_it(tmp_path):
    db = np.array([[500_000.0, 4_000_000.0]])
    root = tmp_path / "bench"
    split = root / "images" / "test"
    _image(split / "database" / downloader_name(*db[0], zone="17", letter="T", note="database0"))
    _image(split / "queries" / downloader_name(*db[0], zone="18", letter="T", note="queries0"))
    assert [p.tolist() for p in read_split(root).positives] == [[0]]


def test_the_paths_file_decides_which_images_and_in_which_order(tmp_path):
    db = np.array([[0.0, 0.0], [100.0, 0.0], [200.0, 0.0]])
    root = make_downloader(tmp_path / "b", db, np.array([[100.0, 5.0]]), nested=False)
    split = root / "images" / "test"
    names = sorted(p.name for p in (split / "database").iterdir())
    (split / "database_images_paths.txt").write_text(f"{names[2]}\n{names[0]}\n")
    index = read_split(root)
    assert [p.name for p in index.database_paths] == [names[2], names[0]]
    assert [p.tolist() for p in index.positives] == [[]]  # the image at 100 m was left out


def test_nordland_rule_frames_within_ten_are_positives(tmp_path):
    # download_nordland.py: summer database, winter queries, both named @0@{frame * 25 / 10.5}@...
    root = tmp_path / "nordland" / "images" / "test"
    frames = range(60)
    for frame in frames:
        north = frame * 25 / 10.5
        _image(root / "database" / f"@0@{north}@@@@@{frame:05d}@@@@@@@@.jpg")
        _image(root / "queries" / f"@0@{north}@@@@@{frame:05d}@@@@@@@@.jpg")
    index = read_split(tmp_path / "nordland")
    frame_of = [int(p.name.split("@")[7]) for p in index.database_paths]  # files sort by name, not frame
    for query, positives in zip(index.query_paths, index.positives):
        q = int(query.name.split("@")[7])
        assert sorted(frame_of[i] for i in positives) == [f for f in frames if abs(f - q) <= 10]


@pytest.mark.parametrize("dataset", ["sped", "amstertime"])
def test_paired_benchmarks_have_one_positive_per_query(tmp_path, dataset):
    # download_sped.py / download_amstertime.py: both images of pair k named @0@{k * 1000}@...
    root = tmp_path / dataset / "images" / "test"
    pairs = [3, 10, 11, 250, 251]
    for k in pairs:
        _image(root / "database" / f"@0@{k * 1000}@@@@@{k}@@@@@@@@.jpg")
        _image(root / "queries" / f"@0@{k * 1000}@@@@@{k}@@@@@@@@.jpg")
    index = read_split(tmp_path / dataset)
    assert [p.tolist() for p in index.positives] == [[i] for i in range(len(pairs))]


def _npy_fixture(folder: Path, prefix: str, n_db: int, n_q: int) -> tuple[list[str], list[str]]:
    db = [f"ref/{i:07d}.jpg" for i in range(n_db)]
    queries = [f"query/{i:07d}.jpg" for i in range(n_q)]
    for name in db + queries:
        _image(folder / name)
    np.save(folder / f"{prefix}_dbImages.npy", np.array(db))
    np.save(folder / f"{prefix}_qImages.npy", np.array(queries))
    return db, queries


def test_gsv_cities_npy_format_takes_the_ground_truth_as_given(tmp_path):
    folder = tmp_path / "Nordland"
    _npy_fixture(folder, "Nordland", 30, 3)
    gt = np.empty(3, dtype=object)  # Nordland_gt.npy: query i -> database {10i-1, 10i, 10i+1}
    gt[:] = [np.array([0, 1]), np.array([9, 10, 11]), np.array([19, 20, 21])]
    np.save(folder / "Nordland_gt.npy", gt, allow_pickle=True)
    index = read_split(folder)
    assert split_format(folder) == "npy"
    assert [p.tolist() for p in index.positives] == [[0, 1], [9, 10, 11], [19, 20, 21]]
    assert index.database_paths[3] == folder / "ref/0000003.jpg"


def test_sped_npy_ground_truth_is_a_two_dimensional_integer_array(tmp_path):
    folder = tmp_path / "SPED"
    _npy_fixture(folder, "SPED", 4, 4)
    np.save(folder / "SPED_gt.npy", np.arange(4, dtype=np.int64).reshape(4, 1))  # as the SPED file is
    assert [p.tolist() for p in read_split(folder).positives] == [[0], [1], [2], [3]]


def test_msls_val_queries_and_positives_come_from_qidx_and_pidx(tmp_path):
    folder = tmp_path / "msls"
    _, queries = _npy_fixture(folder, "msls_val", 10, 5)
    np.save(folder / "msls_val_qIdx.npy", np.array([0, 2, 4]))
    p_idx = np.empty(3, dtype=object)
    p_idx[:] = [np.array([1]), np.array([3, 4]), np.array([9])]
    np.save(folder / "msls_val_pIdx.npy", p_idx, allow_pickle=True)
    index = read_split(folder)
    assert [p.relative_to(folder).as_posix() for p in index.query_paths] == [queries[0], queries[2], queries[4]]
    assert [p.tolist() for p in index.positives] == [[1], [3, 4], [9]]


def test_a_name_without_utm_fields_is_named(tmp_path):
    root = make_downloader(tmp_path / "b", np.array([[0.0, 0.0]]), np.array([[0.0, 0.0]]), nested=False)
    _image(root / "images" / "test" / "queries" / "IMG_0001.jpg")
    with pytest.raises(FormatError, match="IMG_0001.jpg: image name has no coordinates"):
        read_split(root)


def test_a_ground_truth_that_is_not_an_object_array_is_named(tmp_path):
    folder = tmp_path / "pitts"
    _npy_fixture(folder, "pitts30k_test", 3, 2)
    np.save(folder / "pitts30k_test_gt.npy", np.array([0.5, 1.5]))
    with pytest.raises(FormatError, match=r"pitts30k_test_gt.npy: ground truth must be an object array"):
        read_split(folder)


def test_a_benchmark_folder_without_queries_is_named(tmp_path):
    root = tmp_path / "tokyo247"
    _image(root / "images" / "test" / "database" / downloader_name(0, 0, note="database0"))
    with pytest.raises(DatasetLayoutError, match="tokyo247' holds no evaluation split"):
        read_split(root)
    with pytest.raises(UserError, match="unknown benchmark 'pitts'"):
        benchmark_keys("pitts")


def test_discover_finds_benchmarks_in_either_format(tmp_path):
    make_downloader(tmp_path / "pitts30k", np.array([[0.0, 0.0]]), np.array([[0.0, 0.0]]))
    folder = tmp_path / "SPED"
    _npy_fixture(folder, "SPED", 2, 2)
    np.save(folder / "SPED_gt.npy", np.arange(2).reshape(2, 1))
    assert set(discover(tmp_path)) == {"pitts30k/test", "SPED/test"}


def test_every_benchmark_has_a_rule_a_source_and_real_sizes():
    for b in BENCHMARKS.values():
        assert b.rule and b.source and b.database > 0 and b.queries > 0, b.key
    assert benchmark_keys("all") == list(BENCHMARKS)
    assert BENCHMARKS["pitts30k"].zone == "17T" and BENCHMARKS["tokyo247"].zone == "54S"


# --- the embedded versions (`vpr data synth --benchmark`) follow each rule ---------------------------

@pytest.fixture(scope="module")
def embedded_benchmarks(tmp_path_factory):
    from pipeline.data.synthetic.benchmarks import generate_benchmarks

    out = tmp_path_factory.mktemp("benchmarks")
    generate_benchmarks(out, list(BENCHMARKS), seed=0, scale="demo", progress=False)
    return out


def _zone(path: Path) -> str:
    fields = path.name.split("@")
    return f"{fields[3]}{fields[4]}"


def test_every_embedded_benchmark_is_read_in_its_format_with_the_real_ratio(embedded_benchmarks):
    from pipeline.data.synthetic.benchmarks import sizes

    for key, b in BENCHMARKS.items():
        index = read_split(embedded_benchmarks / key)
        n_db, n_q = sizes(key, "demo")
        assert len(index.database_paths) >= n_db, key
        expected_q = n_q - (1 if key == "msls_val" else 0)  # qIdx leaves a query out
        assert len(index.query_paths) == expected_q, key
        if n_q > 4:  # above the floor of 4 queries, the real query/database ratio
            assert abs(n_q / n_db - b.queries / b.database) < 0.1, key
        assert all(len(p) for p in index.positives), key  # every embedded query has a positive


@pytest.mark.parametrize("key", ["pitts30k", "tokyo247", "st_lucia", "eynsham", "svox"])
def test_embedded_names_carry_the_benchmarks_utm_zone(embedded_benchmarks, key):
    index = read_split(embedded_benchmarks / key)
    assert {_zone(p) for p in index.database_paths + index.query_paths} == {BENCHMARKS[key].zone}


def test_embedded_pitts30k_positives_equal_the_reference_rule(embedded_benchmarks):
    from pipeline.data.index import utm_of

    index = read_split(embedded_benchmarks / "pitts30k")
    expected = brute_force_positives(utm_of(index.database_paths), utm_of(index.query_paths))
    assert [p.tolist() for p in index.positives] == [e.tolist() for e in expected]
    assert any(p.parent.name != "database" for p in index.database_paths)  # in subfolders, as released


def test_embedded_nordland_positives_are_the_frames_within_ten(embedded_benchmarks):
    index = read_split(embedded_benchmarks / "nordland")
    frame_of = [int(p.name.split("@")[7]) for p in index.database_paths]
    for query, positives in zip(index.query_paths, index.positives):
        q = int(query.name.split("@")[7])
        assert sorted(frame_of[i] for i in positives) == [f for f in sorted(frame_of) if abs(f - q) <= 10]


@pytest.mark.parametrize("key", ["sped", "amstertime"])
def test_embedded_pairs_have_exactly_their_partner_as_positive(embedded_benchmarks, key):
    index = read_split(embedded_benchmarks / key)
    assert all(len(p) == 1 for p in index.positives)
    stem = (lambda p: p.name.split("@")[7]) if key == "amstertime" else (lambda p: p.stem)
    assert all(stem(index.database_paths[p[0]]) == stem(q) for q, p in zip(index.query_paths, index.positives))


def test_embedded_eynsham_database_is_the_first_panoramas_five_tiles_each(embedded_benchmarks):
    index = read_split(embedded_benchmarks / "eynsham")
    pano = lambda p: int(p.name.split("@")[7])  # noqa: E731
    db_panos, q_panos = [pano(p) for p in index.database_paths], [pano(p) for p in index.query_paths]
    assert max(db_panos) < min(q_panos)
    assert all(db_panos.count(n) == 5 for n in set(db_panos))
    assert sorted({p.name.split("@")[8] for p in index.database_paths}) == ["0", "1", "2", "3", "4"]


def test_embedded_st_lucia_queries_are_a_later_traversal_of_the_same_route(embedded_benchmarks):
    index = read_split(embedded_benchmarks / "st_lucia")
    pano = lambda p: int(p.name.split("@")[7])  # noqa: E731
    assert max(map(pano, index.database_paths)) < min(map(pano, index.query_paths))
    assert all(len(p) >= 1 for p in index.positives)


def test_embedded_msls_val_uses_qidx_and_pidx_and_svox_its_gallery(embedded_benchmarks):
    folder = embedded_benchmarks / "msls_val"
    assert (folder / "msls_val_qIdx.npy").is_file() and (folder / "msls_val_pIdx.npy").is_file()
    assert not (folder / "msls_val_gt.npy").exists()
    assert np.load(folder / "msls_val_qImages.npy").size > len(read_split(folder).query_paths)
    assert (embedded_benchmarks / "svox" / "images" / "test" / "gallery").is_dir()


def test_data_check_and_stats_accept_every_benchmark_and_name_a_bad_file(embedded_benchmarks, tmp_path):
    import shutil

    from pipeline.data.checks import check_dataset
    from pipeline.data.stats import dataset_stats

    report = check_dataset(embedded_benchmarks, progress=False)
    assert report.ok and set(report.scanned) == {f"{k}/test" for k in BENCHMARKS}
    assert {s.split for s in dataset_stats([embedded_benchmarks])} >= {f"{k}/test" for k in BENCHMARKS}
    broken = tmp_path / "tokyo247"
    shutil.copytree(embedded_benchmarks / "tokyo247", broken)
    victim = sorted((broken / "images" / "test" / "queries").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:100])  # truncated
    report = check_dataset(broken, progress=False)
    assert [p.path for p in report.errors] == [str(victim)]


def test_an_interrupted_generation_leaves_nothing_that_looks_like_a_benchmark(tmp_path):
    from pipeline.data.synthetic.benchmarks import generate_benchmarks

    out = tmp_path / "benchmarks"
    generate_benchmarks(out, ["sped"], seed=0, scale="demo", image_size=32, progress=False)
    # A generation killed mid-way leaves its temporary folder, never a half-filled `<key>/`.
    partial = out / ".tokyo247.partial" / "images" / "test" / "queries"
    partial.mkdir(parents=True)
    (partial / downloader_name(0, 0, note="queries0")).write_bytes(b"")
    assert set(discover(out)) == {"sped/test"}
    generate_benchmarks(out, ["tokyo247"], seed=0, scale="demo", image_size=32, progress=False)
    assert set(discover(out)) == {"sped/test", "tokyo247/test"} and not (out / ".tokyo247.partial").exists()
