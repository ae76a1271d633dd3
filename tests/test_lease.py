"""The claim of a run in the shared MLflow store: held while its holder beats, taken over once stale."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from pipeline.tracking.lease import HEARTBEAT_TAG, OWNER_TAG, Lease, LeaseHeld, holder
from pipeline.tracking.store import Tracker


@pytest.fixture
def tracker(tmp_path):
    return Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "lease-test")


def test_a_live_claim_keeps_others_out_and_a_stale_one_is_taken_over(tracker):
    run_id = tracker.create_run("r", {"vpr.kind": "run"})
    with Lease(tracker, run_id, owner="machine-a", lease_s=3):
        with pytest.raises(LeaseHeld, match="machine-a"):
            Lease(tracker, run_id, owner="machine-b", lease_s=3).acquire()
        time.sleep(2.5)  # the holder keeps renewing: still held after most of a lease
        assert holder(tracker.client.get_run(run_id), 3) == "machine-a"
    time.sleep(3.5)  # released: no renewals, the claim goes stale
    assert holder(tracker.client.get_run(run_id), 3) is None
    with Lease(tracker, run_id, owner="machine-b", lease_s=3):
        assert tracker.client.get_run(run_id).data.tags[OWNER_TAG] == "machine-b"


def test_a_killed_holder_stops_beating(tracker, tmp_path):
    """A holder process killed with SIGKILL leaves a claim that goes stale within the lease."""
    run_id = tracker.create_run("r", {"vpr.kind": "run"})
    script = textwrap.dedent(f"""
        import time
        from pipeline.tracking.lease import Lease
        from pipeline.tracking.store import Tracker
        t = Tracker({tracker.tracking_uri!r}, "lease-test")
        Lease(t, {run_id!r}, owner="doomed", lease_s=3).acquire()
        print("claimed", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "claimed"
        assert holder(tracker.client.get_run(run_id), 3) == "doomed"
        proc.kill()
        proc.wait()
        beat = float(tracker.client.get_run(run_id).data.tags[HEARTBEAT_TAG])
        time.sleep(max(0.0, beat + 3.2 - time.time()))
        assert holder(tracker.client.get_run(run_id), 3) is None
        Lease(tracker, run_id, owner="heir", lease_s=3).acquire()
    finally:
        proc.kill()
