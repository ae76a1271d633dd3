"""Report tables and their statistics: bootstrap CIs, paired tests, ties, every table kind from the
real study files (compiled with a real pdflatex), Δ rows against paper 003's printed deltas,
missing runs, bold, escaping."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipeline.reporting.collect import CellResult
from pipeline.reporting.statistics import (METHOD, bootstrap_ci, mark_ties, mean_std,
                                           paired_bootstrap_pvalue)
from pipeline.reporting.tables import (Table, latex_escape, markdown_section, published_vs_reproduced,
                                       standalone_document, study_tables, write_tables)
from pipeline.studies.plan import expand_study
from pipeline.studies.study import Study, load_study, load_studies

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
QUERIES = {"sf_xs_val": 400, "sf_xs_test": 200, "tokyo_xs": 120}   # small query sets, same per dataset
NS = [1, 5, 10]


# ---------------------------------------------------------------------------------------------
# Synthetic results


def _hits_for(recalls: dict[int, float], q: int, rng: np.random.Generator) -> np.ndarray:
    """Bool [q, len(NS)] hits whose column means are the given recalls (to 1/q), nested in N."""
    order = rng.permutation(q)                       # the same queries are "easiest" at every N
    out = np.zeros((q, len(NS)), dtype=bool)
    for j, n in enumerate(NS):
        r = max(v for k, v in recalls.items() if k <= n)
        out[order[:round(r / 100 * q)], j] = True
    return out


def _configs(study: Study) -> dict[tuple[str, int], dict]:
    try:
        return {(c.label, c.seed): c.config.to_dict() for c in expand_study(study)}
    except ValueError:      # tuned studies cannot expand before tuning: no config, like a missing run
        return {}


def synthetic_cells(study: Study, seed: int = 0, seeds: tuple[int, ...] | None = None,
                    missing: dict[str, str] | None = None, with_hits: bool = True) -> list[CellResult]:
    """CellResults for every cell of `study`: published numbers (+ noise per seed) where printed,
    random ones otherwise; hits consistent with the final recalls; `missing` {label: status}."""
    rng = np.random.default_rng(seed)
    configs = _configs(study)
    missing = missing or {}
    out = []
    for i, label in enumerate(study.labels):
        for s in seeds if seeds is not None else study.seeds:
            if label in missing:
                out.append(CellResult(study.id, label, s, f"h{i}", missing[label]))
                continue
            pub = study.published.get(label, {})
            jitter = rng.normal(0, 0.5) if s else 0.0
            final: dict[str, dict[int, float]] = {}
            for d in QUERIES:
                base = pub.get(d) or {"R@1": 30 + 5 * i, "R@5": 45 + 5 * i}
                final[d] = {1: base["R@1"] + jitter, 5: base["R@5"] + jitter}
            per_epoch = pub.get("per_epoch") or {e: {"R@1": 20 + 3 * e + i, "R@5": 35 + 3 * e + i} for e in range(4)}
            history = [{"epoch": int(e), "train_loss": 1.0 / (int(e) + 1), "lr": 1e-4,
                        "val_recall_at_1": m["R@1"] + jitter, "val_recall_at_5": m["R@5"] + jitter,
                        "val_recall_at_10": m["R@5"] + 5} for e, m in sorted(per_epoch.items())]
            hits = {d: _hits_for(final[d], q, rng) for d, q in QUERIES.items()} if with_hits else {}
            out.append(CellResult(study.id, label, s, f"h{i}", "finished", config=configs.get((label, s)),
                                  final=final, history=history, hits=hits, ns=list(NS) if with_hits else []))
    return out


@pytest.fixture(scope="module")
def studies() -> dict[str, Study]:
    return {s.id: s for s in load_studies([EXPERIMENTS])}


# ---------------------------------------------------------------------------------------------
# Statistics


def test_bootstrap_ci_contains_estimate_and_narrows_with_more_queries():
    rng = np.random.default_rng(0)
    small = rng.random(100) < 0.6
    large = rng.random(10_000) < 0.6
    lo_s, hi_s = bootstrap_ci(small)
    lo_l, hi_l = bootstrap_ci(large)
    assert lo_s <= 100 * small.mean() <= hi_s
    assert lo_l <= 100 * large.mean() <= hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 5           # ~ 1/sqrt(Q): 10x narrower for 100x queries
    assert bootstrap_ci(small) == (lo_s, hi_s)       # deterministic for a seed
    assert bootstrap_ci(np.ones(50, bool)) == (100.0, 100.0)


def test_bootstrap_ci_matches_literal_query_resampling():
    """The multinomial draw is the same distribution as indexing Q random queries."""
    rng = np.random.default_rng(1)
    hits = rng.random(2_000) < 0.4
    idx = rng.integers(0, hits.size, size=(4_000, hits.size))
    literal = 100 * np.quantile(hits[idx].mean(axis=1), [0.025, 0.975])
    ours = bootstrap_ci(hits, n_boot=4_000)
    assert np.allclose(ours, literal, atol=0.4)


def test_paired_bootstrap_pvalue():
    rng = np.random.default_rng(2)
    b = rng.random(500) < 0.5
    a = b | (rng.random(500) < 0.3)                  # a hits wherever b does, and more
    assert paired_bootstrap_pvalue(a, b) < 0.01
    assert paired_bootstrap_pvalue(b, a) > 0.99
    assert paired_bootstrap_pvalue(b, b.copy()) == 1.0   # identical: never significantly better
    # Pairing matters: a one-query improvement on 500 queries is no evidence.
    c = b.copy()
    c[np.flatnonzero(~b)[0]] = True
    assert paired_bootstrap_pvalue(c, b) > 0.05
    with pytest.raises(ValueError, match="500 queries.*499"):
        paired_bootstrap_pvalue(a, b[:499])


def test_mark_ties():
    rng = np.random.default_rng(3)
    base = rng.random(300) < 0.5
    best = base | (rng.random(300) < 0.4)
    near = best.copy()
    near[np.flatnonzero(best)[:2]] = False           # 2 queries worse: a tie
    label, ties = mark_ties({"worse": base, "best": best, "near": near})
    assert label == "best"
    assert ties == {"near"}
    label, ties = mark_ties({"worse": base, "best": best}, best="worse")
    assert label == "worse" and ties == {"best"}     # the caller's reference is kept
    with pytest.raises(ValueError, match="query counts"):
        mark_ties({"a": base, "b": best[:10]})


def test_mean_std():
    assert mean_std([42.0]) == (42.0, 0.0)
    m, s = mean_std([1.0, 2.0, 3.0])
    assert m == 2.0 and s == pytest.approx(1.0)      # ddof=1
    with pytest.raises(ValueError):
        mean_std([])


# ---------------------------------------------------------------------------------------------
# Tables


PRINTED_DELTAS = {   # paper 003 Table 2, rows "GeM Δ AVG" and "MixVPR Δ AVG", as printed
    "gem": [2.16, 3.08, 5.8, 4.7, 4.45, 5.4],
    "mixvpr": [23.45, 16.68, 40.2, 36.7, 42.54, 37.78],
}
COLUMNS_6 = [f"{d} R@{n}" for d in ("SF-XS val", "SF-XS test", "Tokyo-XS") for n in (1, 5)]


def test_delta_rows_reproduce_seed003_table2(studies):
    study = studies["s003_table2_poolings"]
    cells = synthetic_cells(study, with_hits=False)     # final = the published numbers
    (table,) = study_tables(study, cells)
    for label, printed in PRINTED_DELTAS.items():
        for column, value in zip(COLUMNS_6, printed):
            entry = table.entry(f"{label} Δ avg", column)
            assert entry.value == pytest.approx(value, abs=1e-9)
            assert entry.markdown() == f"+{value:.2f}"
    assert [r.kind for r in table.rows] == ["data"] * 3 + ["delta"] * 2
    assert "gem Δ avg" in table.markdown() and r"gem $\Delta$ avg" in table.latex()
    # MixVPR is printed bold in every column of the paper, and so it is here.
    assert all(table.entry("mixvpr", c).bold for c in COLUMNS_6)
    assert not any(table.entry("avg", c).bold for c in COLUMNS_6)


def test_final_table_cells_ci_bold_and_ties(studies):
    study = studies["s003_table2_poolings"]
    cells = synthetic_cells(study)
    (table,) = study_tables(study, cells)
    e = table.entry("mixvpr", "SF-XS test R@1")
    assert e.value == pytest.approx(57.40) and e.bold and e.ci is not None
    assert e.ci[0] <= 57.4 <= e.ci[1]
    md = table.markdown()
    assert "**57.40** [" in md
    assert r"\textbf{57.40}" in table.latex() and r"\scriptsize [" in table.latex()
    assert METHOD.split(".")[0] in table.caption
    # Two close rows on the same queries: the runner-up is a tie (†), not bold.
    for c in cells:
        if c.label == "gem":
            c.final["tokyo_xs"][1] = 72.0
            c.hits["tokyo_xs"] = next(x for x in cells if x.label == "mixvpr").hits["tokyo_xs"].copy()
            c.hits["tokyo_xs"][np.flatnonzero(c.hits["tokyo_xs"][:, 0])[0], 0] = False
    (table,) = study_tables(study, cells)
    tie = table.entry("gem", "Tokyo-XS R@1")
    assert tie.tie and not tie.bold and "†" in tie.markdown()
    assert r"$^\dagger$" in table.latex()
    assert not table.entry("avg", "Tokyo-XS R@1").tie


def test_lr_wd_columns_only_when_optimizers_differ(studies):
    (t3,) = study_tables(studies["s003_table3_optimizers"], synthetic_cells(studies["s003_table3_optimizers"]))
    assert t3.stub == ["Aggregator", "Optimizer", "LR", "WD"]
    assert t3.entry("gem / AdamW", "LR").text == "1e-3" and t3.entry("gem / AdamW", "WD").text == "0.1"
    assert t3.entry("mixvpr / Adam", "LR").text == "2e-4" and t3.entry("mixvpr / Adam", "WD").text == "0"
    (t4,) = study_tables(studies["s003_table4_schedulers"], synthetic_cells(studies["s003_table4_schedulers"]))
    assert t4.stub == ["Aggregator", "Scheduler"]


def test_missing_runs_render_and_keep_every_row(studies):
    study = studies["s003_table3_optimizers"]
    cells = synthetic_cells(study, missing={"gem / ASGD": "failed", "mixvpr / AdamW": "missing"})
    cells = [c for c in cells if c.label != "mixvpr / AdamW"]     # no CellResult at all
    for c in cells:
        if c.label == "gem / Adam":
            del c.final["tokyo_xs"]                                  # finished, one value absent
    (table,) = study_tables(study, cells)
    assert [r.key for r in table.rows] == study.labels
    assert table.entry("gem / ASGD", "SF-XS val R@1").missing
    assert table.entry("mixvpr / AdamW", "Tokyo-XS R@5").missing
    assert table.entry("gem / Adam", "Tokyo-XS R@1").missing
    assert not table.entry("gem / Adam", "SF-XS val R@1").missing
    assert "failed: gem / ASGD" in table.caption and "missing: mixvpr / AdamW" in table.caption
    assert "no value: gem / Adam" in table.caption
    assert "| — |" in table.markdown() and " & -- & " in table.latex()
    # Every status, and no results at all, still give a full table for every kind.
    for sid in ("s000_table1_losses", "s004_table7_top3", "s003_table2_poolings"):
        s = studies[sid]
        for t in [*study_tables(s, []), published_vs_reproduced(s, [])]:
            assert t.rows and "run missing" in t.caption
            ours = [i for i, c in enumerate(t.columns) if "paper" not in c and i >= len(t.stub) and "Δ" not in c]
            assert all(r.entries[i].missing for r in t.rows for i in ours)   # nothing invented
        (main,) = study_tables(s, [])
        n_rows = len(s.labels) * (2 if s.kind == "per_epoch" else 1) + (len(s.labels) - 1 if s.baseline else 0)
        assert len(main.rows) == n_rows


def test_per_epoch_layout(studies):
    study = studies["s000_table1_losses"]
    (table,) = study_tables(study, synthetic_cells(study))
    assert table.stub == ["Loss", "Metric"]
    assert table.columns[2:] == [f"SF-XS val, epoch {e:02d}" for e in range(10)] + ["SF-XS test"]
    assert [r.key for r in table.rows][:2] == ["contrastive | R@1", "contrastive | R@5"]
    assert table.entry("triplet | R@5", "SF-XS val, epoch 09").value == pytest.approx(59.1)
    assert table.entry("multisimilarity | R@1", "SF-XS test").value == pytest.approx(25.1)
    # Best per column among the same metric: multi-similarity, the paper's best loss.
    assert table.entry("multisimilarity | R@1", "SF-XS val, epoch 05").bold
    assert table.entry("multisimilarity | R@5", "SF-XS val, epoch 05").bold
    assert not table.entry("contrastive | R@5", "SF-XS val, epoch 05").bold
    # A run capped at 3 epochs (demo) gets 3 epoch columns, not 10 columns of dashes.
    cells = synthetic_cells(study)
    for c in cells:
        c.history = c.history[:3]
    (short,) = study_tables(study, cells)
    assert short.columns[2:5] == ["SF-XS val, epoch 00", "SF-XS val, epoch 01", "SF-XS val, epoch 02"]


def test_several_seeds_mean_std(studies):
    study = studies["s003_table2_poolings"]
    study = Study(**{**study.__dict__, "seeds": (0, 1, 2)})
    cells = synthetic_cells(study)
    cells = [c for c in cells if not (c.label == "avg" and c.seed == 2)]   # one seed not run
    (table,) = study_tables(study, cells)
    e = table.entry("gem", "SF-XS val R@1")
    values = [c.final["sf_xs_val"][1] for c in cells if c.label == "gem"]
    assert e.value == pytest.approx(np.mean(values)) and e.std == pytest.approx(np.std(values, ddof=1))
    assert " ± " in e.markdown() and r"$\pm$" in e.latex()
    assert table.entry("avg", "SF-XS val R@1").note == "2/3"
    assert "3 seeds" in table.caption


def test_top_k_ranks_by_test_r1(studies):
    study = studies["s004_table7_top3"]
    cells = synthetic_cells(study)
    (table,) = study_tables(study, cells)
    # Paper: CosPlace + MS/MS (39.8, 59.68) > Angular/FastAP (34.7, 51.43) > MS/NTXent (34.3, 50.48).
    assert [r.key for r in table.rows] == study.labels
    assert [r.entries[0].text for r in table.rows] == ["1", "2", "3"]
    score_col = table.columns[-1]
    assert table.entry(study.labels[0], score_col).value == pytest.approx((39.8 + 59.68) / 2)
    # A missing run stays visible below the ranking, without a rank.
    cells = synthetic_cells(study, missing={study.labels[0]: "running"})
    (table,) = study_tables(study, cells)
    assert [r.key for r in table.rows] == [study.labels[1], study.labels[2], study.labels[0]]
    assert table.rows[-1].entries[0].missing and "running" in table.caption
    assert "top 2 of 3" in table.caption


def test_published_vs_reproduced(studies):
    study = studies["s003_table2_poolings"]
    cells = synthetic_cells(study)
    for c in cells:
        c.final["sf_xs_test"][1] += 1.25
    t = published_vs_reproduced(study, cells)
    assert t.name == "s003_table2_poolings_published"
    assert t.entry("gem | SF-XS test", "R@1 paper").value == pytest.approx(23.0)
    assert t.entry("gem | SF-XS test", "R@1 ours").value == pytest.approx(24.25)
    assert t.entry("gem | SF-XS test", "R@1 Δ").markdown() == "+1.25"
    assert t.entry("gem | SF-XS val", "R@5 Δ").markdown() == "+0.00"
    # per_epoch: the last epoch (paper's and ours named when they differ) and the test column.
    s0 = studies["s000_table3_optimizers"]
    cells = synthetic_cells(s0)
    for c in cells:
        c.history = c.history[:3]
    t = published_vs_reproduced(s0, cells)
    assert [r.key for r in t.rows][:2] == ["Adam | SF-XS val, last epoch (paper 09, ours 02)", "Adam | SF-XS test"]
    assert t.entry("SGD | SF-XS test", "R@1 paper").value == pytest.approx(28.79)
    assert published_vs_reproduced(studies["s000_fig2_pooling"], []).rows == []


def test_latex_escaping():
    assert latex_escape("a_b 50% R&D #1 $x {y} ~^\\") == (
        r"a\_b 50\% R\&D \#1 \$x \{y\} \textasciitilde{}\textasciicircum{}\textbackslash{}")
    assert latex_escape("gem Δ avg ± †") == r"gem $\Delta$ avg $\pm$ $^\dagger$"
    study = load_study(EXPERIMENTS / "s003_table2_poolings.yaml")
    odd = Study(**{**study.__dict__, "id": "odd_table", "grid": {"model.aggregator.name": ["a_b", "50%", "R&D #1"]},
                   "published": {}, "baseline": None, "title": "Odd_labels & 100%"})
    cells = [CellResult("odd_table", label, 0, "h", "finished", final={"sf_xs_val": {1: 10.0 + i, 5: 20.0}})
             for i, label in enumerate(odd.labels)]
    tex = study_tables(odd, cells)[0].latex()
    assert r"a\_b" in tex and r"50\%" in tex and r"R\&D \#1" in tex and r"Odd\_labels \& 100\%" in tex


def test_write_tables_and_markdown(studies, tmp_path):
    study = studies["s003_table2_poolings"]
    cells = synthetic_cells(study)
    paths = write_tables(study, cells, tmp_path / "tables")
    assert [p.name for p in paths] == ["s003_table2_poolings.tex", "s003_table2_poolings_published.tex",
                                       # its `benchmarks: all`: nine benchmarks, four per table
                                       *(f"s003_table2_poolings_benchmarks_{i}.tex" for i in (1, 2, 3))]
    assert all(p.read_text().startswith(r"\begin{table}") for p in paths)
    md = markdown_section(study, cells)
    assert md.startswith("### s003_table2_poolings") and "| ---: |" in md and md.count("**s003_table2_poolings") == 5


# ---------------------------------------------------------------------------------------------
# Real LaTeX


def _pdflatex() -> str:
    exe = shutil.which("pdflatex")
    if exe is None:
        if os.environ.get("VPR_REQUIRE_PDFLATEX"):
            pytest.fail("pdflatex is not installed but VPR_REQUIRE_PDFLATEX is set (see .ci/run)")
        pytest.skip("pdflatex is not installed (set VPR_REQUIRE_PDFLATEX=1 to make this a failure)")
    return exe


def _all_kinds_tables(studies: dict[str, Study]) -> list[Table]:
    """Every study's tables, with a few missing runs and one study at three seeds."""
    tables: list[Table] = []
    for sid, study in studies.items():
        missing = {study.labels[-1]: "failed"} if len(study.labels) > 1 else {}
        if sid == "s003_table2_poolings":
            study = Study(**{**study.__dict__, "seeds": (0, 1, 2)})
        cells = synthetic_cells(study, missing=missing)
        tables += study_tables(study, cells)
        tables.append(published_vs_reproduced(study, cells))
    tables += study_tables(studies["s004_table7_top3"], [])   # nothing run yet
    return tables


def test_tables_compile_with_pdflatex(studies, tmp_path):
    exe = _pdflatex()
    tables = _all_kinds_tables(studies)
    assert {s.kind for s in studies.values()} == {"final", "per_epoch", "top_k"}
    tex = tmp_path / "tables.tex"
    tex.write_text(standalone_document(tables), encoding="utf-8")
    proc = subprocess.run([exe, "-interaction=nonstopmode", "-halt-on-error", tex.name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (tmp_path / "tables.pdf").stat().st_size > 0
    log = (tmp_path / "tables.log").read_text(errors="replace")
    assert "Missing character" not in log                   # every symbol mapped to something printable
