"""End a `vpr` or worker process without tearing its interpreter down.

A process that imported torch and MLflow takes 1.2 s to exit after its work is done (1.7 s for a
sweep worker), nearly all of it CPython finalising modules and objects nobody will use again. A
`dvc repro` of the demo pays that once per stage on its critical path and once per worker.
`exit_process` keeps what an exit must do and skips only that teardown:

- thread pools are told to stop and non-daemon threads are joined, as the interpreter does first;
- atexit handlers run (logging's flush, temporary folders' cleanup, Ray's shutdown, MLflow's);
- stdout and stderr are flushed; then `os._exit` ends the process with the code.

Only entry points call it (the `vpr` script, `python -m` of a worker): never library code, which
must return to whoever called it (a test, a notebook).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn


def exit_code(status: object) -> int:
    """The exit status `sys.exit(status)` would give (None: 0; a message: printed, 1)."""
    if status is None:
        return 0
    if isinstance(status, int):  # bools too, as sys.exit treats them
        return int(status)
    print(status, file=sys.stderr)
    return 1


def exit_process(status: object = 0) -> NoReturn:
    """Exit with `status` as `sys.exit` would, minus the interpreter teardown (module doc)."""
    code = exit_code(status)
    _join_threads()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (e.g. `vpr ... | head`): nothing to save
            pass
    os._exit(code)


def _join_threads() -> None:
    """What the interpreter does first when it exits: tell thread pools to stop (their
    `threading._register_atexit` hooks; an idle pool thread waits for that forever), then join
    every non-daemon thread."""
    shutdown = getattr(threading, "_shutdown", None)  # CPython's own step, hooks and joins
    if shutdown is not None:
        shutdown()
        return
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()


def run_entry_point(main, *args) -> NoReturn:
    """Call `main(*args)` and exit the process with its result through `exit_process`
    (SystemExit, e.g. argparse's, included; other exceptions print their traceback as usual)."""
    try:
        status = main(*args)
    except SystemExit as stop:
        status = stop.code
    exit_process(status)
