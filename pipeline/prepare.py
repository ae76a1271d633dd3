"""The `prepare` stage: generate (embedded profile) or locate (real profile) the datasets and the
profile's benchmarks, check them, and write `datasets.json` with the resolved roots for the later
stages.

The datasets index themselves when a run opens them, so this stage writes no manifests or
positives (`vpr data index` still writes them for inspection).
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.data.checks import check_dataset
from pipeline.errors import UserError
from pipeline.profile import benchmark_roots, dataset_roots, load_profile


class DatasetCheckError(UserError):
    """A dataset of the selected profile failed its checks; the message lists every problem."""


def prepare(params_path: str | Path, out: str | Path, progress: bool = True) -> dict:
    """Run the prepare stage; raise with every dataset problem listed if a check fails."""
    params_path, out = Path(params_path), Path(out)
    name, profile = load_profile(params_path)
    out.mkdir(parents=True, exist_ok=True)
    roots = dataset_roots(profile, out, params_path)
    benchmarks = benchmark_roots(profile, out)
    problems = []
    for key, root in {**roots, **benchmarks}.items():
        report = check_dataset(root, progress=progress)
        problems += [f"  [{key}] {p}" for p in report.errors]
    if problems:
        raise DatasetCheckError("dataset check failed (fix the data or the profile's data: section in "
                                f"{params_path}):\n" + "\n".join(problems))
    summary = {"profile": name, "roots": roots, "benchmarks": benchmarks,
               "image_size": (profile.get("data") or {}).get("image_size")}
    (out / "datasets.json").write_text(json.dumps(summary, indent=2))
    return summary
