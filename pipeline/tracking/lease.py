"""A run's claim in the shared tracking store: who executes it, renewed while it runs.

A file lock on the run folder keeps two processes of one machine apart; machines that share only
the MLflow server need the claim to live there. The executing process writes its owner id and a
heartbeat time as tags of the run's MLflow record and renews the heartbeat from a daemon thread.
Another process may take the run over only when the heartbeat is older than the lease (the holder
died: a killed process or a lost node) or at once when the holder was a process of the same machine
that no longer exists, so a run never executes on two machines at once while its holder is alive.
The store offers no compare-and-set, so a claim is written, left to settle, and read back: of two
processes claiming the same stale run, the one whose write is read back proceeds. The settle is
skipped on a store only one machine writes (sqlite, a local folder), where run_lock suffices.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from typing import Any

from pipeline.tracking.store import Tracker

OWNER_TAG = "vpr.owner"
HEARTBEAT_TAG = "vpr.heartbeat"
DEFAULT_LEASE_S = float(os.environ.get("VPR_LEASE_SECONDS", "120"))
SETTLE_S = 1.0
LOCAL_STORES = ("sqlite:", "file:")  # one machine's file: its processes are kept apart by run_lock


def store_is_shared(tracking_uri: str) -> bool:
    """True for a store that several machines can write (a tracking server, a database server);
    a sqlite file or a local folder is written by one machine only."""
    return "://" in tracking_uri and not tracking_uri.startswith(LOCAL_STORES)


class LeaseHeld(RuntimeError):
    """Another live process holds the run's claim."""


def new_owner_id() -> str:
    """Identity of one execution attempt: host, process and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _dead_here(owner: str) -> bool:
    """True when `owner` was a process of this machine that no longer exists (killed, crashed):
    its claim is void at once, without waiting for the lease to run out."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


def holder(run: Any, lease_s: float = DEFAULT_LEASE_S, now: float | None = None) -> str | None:
    """The owner id of a live claim on `run` (an MLflow Run), or None when it is free or stale."""
    tags = run.data.tags
    owner, beat = tags.get(OWNER_TAG), tags.get(HEARTBEAT_TAG)
    if not owner or beat is None or run.info.status != "RUNNING" or _dead_here(owner):
        return None
    age = (now if now is not None else time.time()) - float(beat)
    return owner if age < lease_s else None


class Lease:
    """The claim of one execution attempt on one MLflow run; renewed by a daemon thread."""

    def __init__(self, tracker: Tracker, run_id: str, owner: str | None = None,
                 lease_s: float = DEFAULT_LEASE_S) -> None:
        self.tracker, self.run_id, self.lease_s = tracker, run_id, lease_s
        self.owner = owner or new_owner_id()
        # Claims race only between machines; one machine's processes never reach here together.
        self.settle_s = SETTLE_S if store_is_shared(tracker.tracking_uri) else 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> None:
        """Claim the run or raise LeaseHeld naming the live holder."""
        current = holder(self._run(), self.lease_s)
        if current is not None and current != self.owner:
            raise LeaseHeld(f"run {self.run_id} is being executed by {current} (heartbeat within "
                            f"{self.lease_s:.0f} s)")
        self._beat()
        time.sleep(self.settle_s)  # a concurrent claimer's write lands before we read back
        winner = self._run().data.tags.get(OWNER_TAG)
        if winner != self.owner:
            raise LeaseHeld(f"run {self.run_id} was claimed at the same time by {winner}")
        self._thread = threading.Thread(target=self._renew, name="vpr-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop renewing; the claim stays as the last heartbeat (it goes stale by itself)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _run(self) -> Any:
        return self.tracker.client.get_run(self.run_id)

    def _beat(self) -> None:
        self.tracker.log(self.run_id, tags={OWNER_TAG: self.owner, HEARTBEAT_TAG: f"{time.time():.3f}"})

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            try:
                self._beat()
            except Exception:  # a store hiccup: the next beat retries; the lease covers 4 periods
                continue
