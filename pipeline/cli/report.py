"""`vpr report`: tables, figures and the summary, from what was recorded."""

from __future__ import annotations

import argparse
import json

from pipeline import project_files
from pipeline.cli.arguments import add_jobs, add_project, add_quiet, add_studies, add_tuned_dir, add_tuning_storage, deprecated


def _report(args: argparse.Namespace) -> int:
    from pipeline.reporting.report import write_report

    studies = list(args.studies) or [getattr(args, "experiments", project_files.STUDIES_DIR)]
    metrics = write_report(args.out, studies, params=args.params, prepared=args.prepared,
                           tuned_dir=args.tuned_dir, tuning_storage=args.tuning_storage, journal_dir=args.journal_dir,
                           plan=args.plan, jobs=args.jobs)
    if not args.quiet:
        print(json.dumps(metrics, indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the `vpr` parser."""
    report = sub.add_parser("report", help="write reports/ from the MLflow runs",
                            description="Write every study's LaTeX tables (with bootstrap CIs and ties), "
                            "published-vs-reproduced tables, figures, reports/README.md (Markdown), runs.csv, "
                            "curves.csv and metrics.json, all from the runs recorded in MLflow.")
    add_studies(report)
    report.add_argument("--out", default=project_files.REPORTS_DIR, help=f"output folder (default {project_files.REPORTS_DIR})")
    add_project(report, runs_dir=False)
    add_tuned_dir(report)
    add_tuning_storage(report)
    report.add_argument("--plan", default=project_files.RECORDED_PLAN_FILE,
                        help="the plan the train stage recorded (cells and config hashes); without the file the "
                        f"studies are planned again from STUDIES and the profile (default {project_files.RECORDED_PLAN_FILE})")
    add_jobs(report, "processes drawing figures", default=None)
    add_quiet(report)
    deprecated(report, "--experiments", "the STUDIES argument", "experiments")
    report.set_defaults(func=_report)
