"""The worker protocol: what a worker is asked to execute, and the one word it answers.

A job is a JSON spec file with a `kind`:

- `RunSpec` (kind "run"): train (or resume) and test one planned run, or only test it;
- `TuningSpec` (kind "tuning"): one worker's share of a tuning's trials, until its budget is met.

Whoever places jobs (the sweep, the tuning, local worker processes or Ray tasks) writes the spec
with `write_spec`; the worker reads it with `read_spec` and answers one `Outcome`:

- `finished`: the run finished (or was found finished), or the tuning's budget was met;
- `busy`: another process holds the run (its lock or its claim in the shared store);
- `failed`: the run failed (recorded in MLflow), or the tuning's trials failed systematically.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from pipeline.errors import UserError
from pipeline.runs.folder import RunFolder

Outcome = Literal["finished", "busy", "failed"]
FINISHED: Outcome = "finished"
BUSY: Outcome = "busy"
FAILED: Outcome = "failed"
OUTCOMES: tuple[Outcome, ...] = (FINISHED, BUSY, FAILED)
# Exit status of a worker that executed one spec (`python -m pipeline.execution.worker SPEC.json`).
EXIT_STATUS: dict[Outcome, int] = {FINISHED: 0, FAILED: 1, BUSY: 3}


class SpecFileError(UserError):
    """A spec file that is missing or not a spec this version writes."""


@dataclass(frozen=True)
class RunSpec:
    """One planned run for a worker: its resolved config, where it lives and where it is recorded."""

    config: dict[str, Any]
    config_hash: str
    run_dir: str
    tracking_uri: str
    experiment: str
    studies: list[str]
    labels: list[str]                  # "<study>: <cell label>" of every cell the run serves
    parent_run_id: str | None = None   # the MLflow parent run of its first study
    profile: str | None = None
    test: bool = True                  # test on the config's test sets after training
    only_evaluate: bool = False        # a trained run: only test it (test sets if `test`, and benchmarks)
    tags: dict[str, str] = field(default_factory=dict)  # added to its MLflow run (e.g. the Ray node)
    benchmarks: dict[str, str] = field(default_factory=dict)  # benchmark key -> folder, to test it on
    protocol: dict[str, Any] = field(default_factory=dict)    # their ProtocolConfig

    kind = "run"

    @property
    def log_path(self) -> Path | None:
        """Where the worker sends its output while executing this run."""
        return RunFolder(Path(self.run_dir)).worker_log


@dataclass(frozen=True)
class TuningSpec:
    """One worker's share of a tuning: trials of every optimizer until its budget is met."""

    tuning: str                        # the tuning file
    storage: str | None                # Optuna storage URL (None: the tuning's journal file)
    journal_dir: str                   # folder of journal files (when `storage` is None)
    profile_name: str
    profile: dict[str, Any]
    roots: dict[str, str]
    runs_dir: str
    tracking_uri: str
    parent_run_id: str
    worker_index: int = 0              # the sampler's seed offset: workers propose different points
    tags: dict[str, str] = field(default_factory=dict)

    kind = "tuning"

    @property
    def log_path(self) -> Path | None:
        """None: a tuning worker's output (trial failures) goes to the terminal of `vpr tune run`."""
        return None


Spec = Union[RunSpec, TuningSpec]
_KINDS: dict[str, type] = {RunSpec.kind: RunSpec, TuningSpec.kind: TuningSpec}


def write_spec(spec: Spec, path: str | Path) -> Path:
    """Write `spec` as JSON at `path` (folders created); the path is what a worker is handed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"kind": spec.kind, **asdict(spec)}, indent=2))
    return path


def read_spec(path: str | Path) -> Spec:
    """The spec in `path` (written by `write_spec`)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        cls = _KINDS[data.pop("kind")]
        return cls(**data)
    except FileNotFoundError:
        raise SpecFileError(f"{path}: no spec file") from None
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise SpecFileError(f"{path}: not a worker spec of this version ({type(err).__name__}: {err})") from None


def with_tags(spec: Spec, tags: dict[str, str]) -> Spec:
    """`spec` with `tags` added to its MLflow records."""
    from dataclasses import replace

    return replace(spec, tags={**spec.tags, **tags})
