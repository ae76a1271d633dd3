"""The standard VPR benchmarks: one entry each, with how its ground truth is built and where that rule comes from.

A benchmark ships in one of two formats (`pipeline.data.benchmarks.formats`):

- `downloader`: the layout gmberton/VPR-datasets-downloader writes and gmberton/VPR-methods-evaluation
  reads: `<dataset>/images/test/{database,queries}/` (images found recursively), file names
  `@UTM_east@UTM_north@zone@letter@lat@lon@...@.jpg`, positives within 25 m of the query in UTM
  east/north (the zone ignored, as the reference ignores it: VPR-methods-evaluation test_dataset.py
  reads `split("@")[1:3]` only);
- `npy`: the GSV-Cities evaluation files (`<prefix>_dbImages.npy`, `<prefix>_qImages.npy`,
  `<prefix>_gt.npy`; MSLS val: `msls_val_qIdx.npy`, `msls_val_pIdx.npy`) as amaralibey/gsv-cities,
  OpenVPRLab, MixVPR, SALAD and BoQ read them: the ground truth is given, not computed.

Rules that the downloader applies when it writes a dataset (which season is the database, mock
coordinates) are facts of the files; they are recorded here with their source, the embedded
versions (`vpr data synth --benchmark`) follow them, and the tests check each on files they make.
Sizes are the real test sets' (database, queries), which the embedded versions keep the ratio of.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import UserError

DOWNLOADER = "downloader"
NPY = "npy"
FORMATS = (DOWNLOADER, NPY)

# gmberton/VPR-datasets-downloader at 2f886d5 (the Nordland, St Lucia and Eynsham scripts at the
# parent of 3aa6613, which removed them); gmberton/VPR-methods-evaluation at adbb6e2.
_DL = "gmberton/VPR-datasets-downloader"
_ME = "gmberton/VPR-methods-evaluation"


@dataclass(frozen=True)
class Benchmark:
    """One benchmark test set as the field reports it."""

    key: str                    # identity in commands, study files and metric names: "pitts30k"
    title: str                  # as printed in tables: "Pitts30k"
    database: int               # real test-set sizes
    queries: int
    formats: tuple[str, ...]    # formats it ships in
    npy_prefix: str | None      # its GSV-Cities file prefix ("pitts30k_test"), if it ships as npy
    zone: str                   # UTM zone and letter its names carry ("17T"); "" for mock coordinates
    rule: str                   # how the ground truth is built, in one sentence
    source: str                 # where that rule is written


BENCHMARKS: dict[str, Benchmark] = {b.key: b for b in (
    Benchmark("pitts30k", "Pitts30k", 10_000, 6_816, (DOWNLOADER, NPY), "pitts30k_test", "17T",
              "positives within 25 m; names carry UTM zone 17T, converted from the .mat files' UTM",
              f"{_DL} format_pitts30k.py (utm.to_latlon(..., 17, 'T')); {_ME} test_dataset.py"),
    Benchmark("msls_val", "MSLS val", 18_871, 740, (DOWNLOADER, NPY), "msls_val", "",
              "cities cph and sf; panoramas dropped; positives within 25 m (npy: msls_val_pIdx for the "
              "740 queries msls_val_qIdx selects)",
              f"{_DL} format_mapillary.py (val cities ['cph', 'sf'], is_panorama rows skipped); "
              "amaralibey/gsv-cities dataloaders/val/MapillaryDataset.py"),
    Benchmark("nordland", "Nordland", 27_592, 27_592, (DOWNLOADER, NPY), "Nordland", "",
              "summer is the database, winter the queries; mock north = frame x 25/10.5 m, so frames "
              "within +-10 are positives",
              f"{_DL} download_nordland.py (summer database, winter queries; utm_north = num_image * 25 / 10.5)"),
    Benchmark("sped", "SPED", 607, 607, (DOWNLOADER, NPY), "SPED", "",
              "one positive per query: query and database image of a pair share mock coordinates, "
              "pairs 1 km apart",
              f"{_DL} download_sped.py (@0@{{int(stem)*1000}}@ for both images of a pair)"),
    Benchmark("amstertime", "AmsterTime", 1_231, 1_231, (DOWNLOADER,), None, "",
              "one positive per query: the pair's archival and present image share mock coordinates, "
              "pairs 1 km apart",
              f"{_DL} download_amstertime.py (mock coordinate int(pair_name) * 1000)"),
    Benchmark("st_lucia", "St Lucia", 1_549, 1_464, (DOWNLOADER,), None, "56J",
              "the first traversal is the database, the last the queries, frames closer than 5 m to the "
              "previous kept one skipped; positives within 25 m",
              f"{_DL} download_st_lucia.py (first and last of the 10 sequences; THRESHOLD_IN_METERS = 5)"),
    Benchmark("eynsham", "Eynsham", 23_935, 24_065, (DOWNLOADER,), None, "30U",
              "the first 4,787 panoramas (5 tiles each) are the database, the rest the queries; "
              "positives within 25 m",
              f"{_DL} download_eynsham.py (pano_num < 4787 -> database; 5 tiles per panorama)"),
    Benchmark("tokyo247", "Tokyo 24/7", 75_984, 315, (DOWNLOADER,), None, "54S",
              "database tiles of Tokyo, 315 day/sunset/night queries; names carry UTM zone 54S; positives "
              "within 25 m",
              f"{_DL} format_tokyo247.py (utm.to_latlon(..., 54, 'S'))"),
    Benchmark("svox", "SVOX", 17_166, 854, (DOWNLOADER,), None, "30U",
              "Oxford RobotCar: one database and one folder of queries per condition (night, overcast, "
              "rain, snow, sun); positives within 25 m",
              f"{_DL} download_svox.py (archive as published; database folder named 'gallery')"),
)}


def benchmark(key: str) -> Benchmark:
    """The benchmark called `key`; an unknown key lists the known ones."""
    try:
        return BENCHMARKS[key]
    except KeyError:
        raise UserError(f"unknown benchmark {key!r} (valid: {', '.join(BENCHMARKS)})") from None


def benchmark_metric(key: str, n: int) -> str:
    """The MLflow key of Recall@n on benchmark `key`: `test_<key>_recall_at_<n>`."""
    return f"test_{benchmark(key).key}_recall_at_{n}"


def benchmark_keys(text: str) -> list[str]:
    """`NAME[,NAME]` or `all` as benchmark keys, each checked."""
    if text.strip() == "all":
        return list(BENCHMARKS)
    keys = [k.strip() for k in text.split(",") if k.strip()]
    if not keys:
        raise UserError(f"no benchmark named in {text!r} (valid: {', '.join(BENCHMARKS)}, or all)")
    return [benchmark(k).key for k in keys]
