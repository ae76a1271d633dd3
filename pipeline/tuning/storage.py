"""Where a tuning's Optuna studies live, and trials a dead worker left behind.

A JournalStorage file by default (`optuna/<tuning id>.journal`, safe for several worker processes
on one machine); any RDB URL (PostgreSQL) shares a tuning between machines. A worker records its
host and pid on each trial; trials left RUNNING by a dead worker are marked FAIL when the study is
next opened (RDB storages also get Optuna's heartbeat), so a rerun continues to the budget
instead of waiting forever.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pipeline import project_files
from pipeline.tuning.tuning_file import TuningError

JOURNAL_LOCK_GRACE_S = 10


def journal_path(tuning_id: str, journal_dir: str | Path = project_files.JOURNALS_DIR) -> Path:
    """The JournalStorage file of a tuning: `<journal_dir>/<tuning id>.journal`."""
    return Path(journal_dir) / f"{tuning_id}.journal"


def open_storage(url: str | None, tuning_id: str, journal_dir: str | Path = project_files.JOURNALS_DIR):
    """(storage, label): the tuning's journal file (no `url`) or the RDB at `url`; an unreachable
    storage fails here, naming it (never with its password)."""
    import optuna

    if not url:
        Path(journal_dir).mkdir(parents=True, exist_ok=True)
        path = journal_path(tuning_id, journal_dir).resolve()
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        # A worker killed while appending leaves its lock behind. The default symlink lock points at
        # a relative path and was never reclaimed (a test's surviving worker spun for minutes); an
        # open-file lock older than the grace period is broken, and appends take milliseconds.
        lock = JournalFileOpenLock(str(path), grace_period=JOURNAL_LOCK_GRACE_S)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path), lock_obj=lock)), str(path)
    try:
        storage = optuna.storages.RDBStorage(url, heartbeat_interval=10, grace_period=30,
                                             engine_kwargs={"pool_pre_ping": True})
        storage.get_all_studies()
    except Exception as err:  # SQLAlchemy/driver errors vary by backend
        raise TuningError(f"--tuning-storage {url!r}: cannot connect ({type(err).__name__}: "
                          f"{str(err).splitlines()[0]})") from None
    return storage, url


def fail_dead_trials(study) -> list:
    """Mark RUNNING trials of dead workers on this host as FAIL; returns those trials."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get("host") != host:
            continue  # another machine's worker: its heartbeat (RDB) or its own rerun handles it
        pid = trial.user_attrs.get("pid")
        if pid is None or not _alive(int(pid)):
            study.tell(trial.number, state=TrialState.FAIL)
            failed.append(trial)
    return failed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
