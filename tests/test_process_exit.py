"""`pipeline.process_exit`: a quick exit still does what an exit must (threads, atexit, output, code)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent("""
    import atexit, sys, threading, time
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path
    from pipeline.process_exit import run_entry_point

    out = Path(sys.argv[1])
    def main(status):
        atexit.register(lambda: (out / "atexit").write_text("ran"))
        def late():
            time.sleep(0.5)
            (out / "thread").write_text("joined")
        threading.Thread(target=late).start()
        pool = ThreadPoolExecutor(1)  # left open: its idle thread waits for the exit hook
        pool.submit(time.sleep, 0.01)
        sys.stdout.write("unflushed output")
        if status == "raise":
            raise SystemExit("stopped: a message")
        return int(status)
    run_entry_point(main, sys.argv[2])
    raise AssertionError("run_entry_point returned")
""")


@pytest.mark.parametrize("status, code", [("0", 0), ("3", 3), ("raise", 1)])
def test_quick_exit_joins_threads_runs_atexit_and_keeps_output(tmp_path: Path, status: str, code: int):
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), status], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == code, result.stderr
    assert result.stdout == "unflushed output"
    assert (tmp_path / "thread").read_text() == "joined"
    assert (tmp_path / "atexit").read_text() == "ran"
    assert ("stopped: a message" in result.stderr) == (status == "raise")
    assert "AssertionError" not in result.stderr
