"""The `prepare` stage: generate (embedded profile) or locate (real profile) the datasets, check
them, index them, and write `datasets.json` with the resolved roots for the later stages."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from pipeline.data.checks import check_dataset
from pipeline.data.index import write_index
from pipeline.errors import UserError


class ParamsError(UserError, ValueError):
    """params.yaml is missing a key or holds an invalid value."""


def load_profile(params_path: str | Path) -> tuple[str, dict]:
    """Return (profile name, profile dict) selected by `profile:` in params.yaml."""
    params_path = Path(params_path)
    if not params_path.is_file():
        raise ParamsError(f"{params_path}: file not found")
    params = yaml.safe_load(params_path.read_text()) or {}
    name = params.get("profile")
    profiles = params.get("profiles") or {}
    if name not in profiles:
        raise ParamsError(f"{params_path}: profile '{name}' is not defined; profiles: {sorted(profiles)}")
    return name, profiles[name]


def resolve_roots(profile: dict, out: Path, params_path: Path) -> dict[str, str]:
    """Dataset roots of a profile: {train, val, sf_xs_test, tokyo_xs}; generates embedded data."""
    data = profile.get("data") or {}
    source = data.get("source")
    if source == "embedded":
        from pipeline.data.synthetic import generate

        root = out / "embedded"
        generate(root, seed=int(data.get("seed", 0)), scale=str(data.get("scale", "demo")),
                 image_size=data.get("image_size"))
        gsv, sf, tokyo = root / "gsv_xs", root / "sf_xs", root / "tokyo_xs"
    elif source == "real":
        missing = [k for k in ("gsv_xs", "sf_xs", "tokyo_xs") if not data.get(k)]
        if missing:
            raise ParamsError(f"{params_path}: profiles.<profile>.data.{missing[0]} is not set; "
                              "give the folder of that dataset")
        gsv, sf, tokyo = Path(data["gsv_xs"]), Path(data["sf_xs"]), Path(data["tokyo_xs"])
    else:
        raise ParamsError(f"{params_path}: data.source must be 'embedded' or 'real', got {source!r}")
    return {"train": str(gsv), "val": str(sf / "val"), "sf_xs_test": str(sf / "test"),
            "tokyo_xs": str(tokyo / "test")}


def prepare(params_path: str | Path, out: str | Path, progress: bool = True) -> dict:
    """Run the prepare stage; raise with every dataset problem listed if a check fails."""
    params_path, out = Path(params_path), Path(out)
    name, profile = load_profile(params_path)
    out.mkdir(parents=True, exist_ok=True)
    roots = resolve_roots(profile, out, params_path)
    problems = []
    for key, root in roots.items():
        report = check_dataset(root, progress=progress)
        problems += [f"  [{key}] {p}" for p in report.errors]
    if problems:
        raise ValueError("dataset check failed:\n" + "\n".join(problems))
    for key, root in roots.items():
        write_index(root, out / "index" / key)
    summary = {"profile": name, "roots": roots,
               "image_size": (profile.get("data") or {}).get("image_size")}
    (out / "datasets.json").write_text(json.dumps(summary, indent=2))
    return summary
