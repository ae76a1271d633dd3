"""Every number a study file says the paper printed equals the paper: the tables of the papers'
text (`../shared/seeds/*.txt`, tab-separated cells; `VPR_SEEDS` overrides the folder) are parsed
and compared with each study's `published:` block, paper 003 Table 2's Δ-vs-AVG rows with the
differences of its rows, and paper 004 Table I with `experiments/datasets/s004_table1.yaml`.
Skipped where the seed texts are absent."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.data.catalog import EVAL_SPLITS
from pipeline.reporting.tables.datasets import load_dataset_table
from pipeline.studies.study import Study, load_studies

ROOT = Path(__file__).resolve().parents[1]
SEEDS = Path(os.environ.get("VPR_SEEDS", ROOT.parent / "shared" / "seeds"))
METRICS = ("R@1", "R@5")
NON_METRIC_HEADERS = {"epochs", "lr", "wd"}          # numeric columns that are settings, not results
_ROMAN = {"I": 1, "II": 2, "III": 3, "IV": 4, "V": 5, "VI": 6, "VII": 7, "VIII": 8, "IX": 9, "X": 10}


@dataclass
class PaperTable:
    """One table of a seed text: its number, the numbers of each data row, its Δ rows."""

    number: int
    rows: list[list[float]]
    delta_rows: list[tuple[str, list[str]]]     # (label, printed cells) of "X Δ Y" rows


def _number(cell: str) -> float | None:
    """A printed number ("<b>58.26</b>", "+2.16", "529,506", "2e-4"), or None for text."""
    text = re.sub(r"</?b>", "", cell).strip().replace(",", "")
    try:
        return float(text)
    except ValueError:
        return None


def _table_number(text: str) -> int:
    """"4" or "IV" -> 4."""
    return int(text) if text.isdigit() else _ROMAN[text]


def _parse_block(lines: list[str], caption: str) -> PaperTable:
    header = lines[0].split("\t")
    skip = {i for i, h in enumerate(header) if h.strip().lower() in NON_METRIC_HEADERS}
    rows, deltas = [], []
    for line in lines[1:]:
        cells = line.split("\t")
        values = [v for i, c in enumerate(cells) if i not in skip and (v := _number(c)) is not None]
        if "Delta" in line or "Δ" in line:
            deltas.append((cells[0], cells[1:]))
        elif values and any("." in c or "," in c for c in cells):   # not a header row (e.g. epochs 00..09)
            rows.append(values)
    return PaperTable(_table_number(caption), rows, deltas)


def paper_tables(path: Path) -> dict[int, PaperTable]:
    """The tables of a seed text, by number: a run of tab-separated lines, captioned just below."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out: dict[int, PaperTable] = {}
    i = 0
    while i < len(lines):
        if "\t" not in lines[i]:
            i += 1
            continue
        j = i
        while j < len(lines) and "\t" in lines[j]:
            j += 1
        caption = next((m.group(1) for line in lines[j:j + 4]
                        if (m := re.match(r"^(?:Table|TABLE) ([0-9]+|[IVX]+)\b", line.strip()))), None)
        if caption is not None:
            table = _parse_block(lines[i:j], caption)
            assert table.number not in out, f"{path.name}: two tables numbered {table.number}"
            out[table.number] = table
        i = j
    return out


def _seed_file(paper: str) -> Path:
    files = sorted(SEEDS.glob(f"{paper}_*.txt"))
    assert len(files) == 1, f"one text of seed {paper} expected in {SEEDS}, found {files}"
    return files[0]


def _expected_rows(study: Study) -> list[list[float]]:
    """The study's published numbers, one list per printed row, in the study's cell order."""
    rows = []
    for label in study.labels:
        pub = study.published.get(label)
        if not pub:
            continue
        if pub.get("per_epoch"):                 # one row per metric: the epochs, then the test column
            for m in METRICS:
                row = [float(pub["per_epoch"][e][m]) for e in sorted(pub["per_epoch"], key=int)]
                rows.append(row + ([float(pub["sf_xs_test"][m])] if pub.get("sf_xs_test") else []))
        else:
            rows.append([float(pub[s.key][m]) for s in EVAL_SPLITS if s.key in pub for m in METRICS])
    return rows


def _flat(rows: list[list[float]]) -> list[float]:
    return [v for row in rows for v in row]


def _studies_with_numbers() -> list[Study]:
    return [s for s in load_studies([ROOT / "experiments"]) if s.published]


pytestmark = pytest.mark.skipif(not SEEDS.is_dir(), reason=f"seed texts {SEEDS} are absent (set VPR_SEEDS)")


@pytest.mark.parametrize("study", _studies_with_numbers(), ids=lambda s: s.id)
def test_published_numbers_equal_the_paper(study):
    match = re.search(r"\bTable ([0-9]+|[IVX]+)\b", study.reproduces)
    assert match, f"{study.id}: reproduces {study.reproduces!r} names no table to check its numbers against"
    tables = paper_tables(_seed_file(study.paper))
    number = _table_number(match.group(1))
    assert number in tables, f"{study.id}: paper {study.paper} has no Table {match.group(1)} (found {sorted(tables)})"
    # Flattened: also covers paper 003 Table 1, printed with one row per dataset.
    assert _flat(_expected_rows(study)) == _flat(tables[number].rows), study.path


def test_seed003_table2_delta_rows_are_differences_of_its_rows():
    study = next(s for s in load_studies([ROOT / "experiments"]) if s.id == "s003_table2_poolings")
    printed = paper_tables(_seed_file("003"))[2].delta_rows
    assert [label.split()[0].lower() for label, _ in printed] == ["gem", "mixvpr"]
    base = study.published[study.baseline]
    for label, cells in printed:
        pub = study.published[label.split()[0].lower()]
        for cell, (split, m) in zip(cells, [(s.key, m) for s in EVAL_SPLITS for m in METRICS]):
            text = re.sub(r"</?b>", "", cell)
            decimals = len(text.split(".")[1]) if "." in text else 0
            assert round(pub[split][m] - base[split][m], decimals) == pytest.approx(float(text)), (label, split, m)


def test_seed004_table1_dataset_counts_equal_the_paper():
    spec = load_dataset_table(ROOT / "experiments" / "datasets" / "s004_table1.yaml")
    ours = [float(v) for r in spec.rows for v in (r["queries"], r["database"]) if v is not None]
    assert ours == _flat(paper_tables(_seed_file("004"))[1].rows)
