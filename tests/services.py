"""Real shared services for tests: a throwaway PostgreSQL cluster and an MLflow tracking server on it.

The cluster is made with the Debian/Ubuntu `postgresql` package's own `initdb`/`pg_ctl`
(/usr/lib/postgresql/<version>/bin) in a temporary folder on a free port; PostgreSQL refuses to run
as root, so under root (CI) it runs as the `postgres` user the package creates (or `nobody`).
The MLflow server uses the cluster as its backend store and serves artifacts itself over HTTP
(`--serve-artifacts`), as `docker/compose.yaml` does. Without the binaries the fixtures skip,
unless VPR_REQUIRE_SERVICES=1 (set by `.ci/run`) makes that a failure.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def require_or_skip(reason: str) -> None:
    """Skip the test, or fail it where CI promised the services (VPR_REQUIRE_SERVICES=1)."""
    if os.environ.get("VPR_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (VPR_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until `url` answers 200 (fail early if `proc` died)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def _as_unprivileged(cmd: list[str]) -> tuple[list[str], str | None]:
    """`cmd` run as a non-root user when we are root (PostgreSQL refuses root); returns (cmd, user)."""
    if os.geteuid() != 0:
        return cmd, None
    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        return ["runuser", "-u", user, "--", *cmd], user
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists")


@dataclass
class Postgres:
    """A running throwaway cluster: `url(db)` is the SQLAlchemy URL of database `db` on it."""

    port: int
    user: str = "vpr"

    def url(self, db: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{db}"


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL cluster for the session with databases `mlflow` and `optuna` (trust auth, local)."""
    bindir = _postgres_bin()
    if bindir is None:
        require_or_skip("PostgreSQL binaries (initdb, pg_ctl) not found; install Debian's `postgresql`")
    try:
        import psycopg  # noqa: F401  (SQLAlchemy 2.1's driver for postgresql:// URLs)
    except ImportError:
        require_or_skip("psycopg2 missing: pip install -e '.[postgres]'")
    # Not under pytest's tmp_path: that folder is private to root, and the server runs as another user.
    base = Path(tempfile.mkdtemp(prefix="vpr-pg-"))
    base.chmod(0o755)
    data, sockets = base / "data", base / "sock"
    _, user = _as_unprivileged([])
    for d in (data, sockets):
        d.mkdir()
        if user:
            shutil.chown(d, user)
    port = free_port()
    pg = Postgres(port)

    def run(*cmd: str) -> None:
        full, _ = _as_unprivileged(list(cmd))
        subprocess.run(full, check=True, capture_output=True, text=True, cwd=base)

    run(str(bindir / "initdb"), "-D", str(data), "-U", pg.user, "-A", "trust", "-E", "UTF8", "--no-sync")
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(data / "server.log"), "-w", "-t", "60",
        "-o", f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
        "start")
    try:
        for db in ("mlflow", "optuna"):
            run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", pg.user, db)
        yield pg
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class MlflowServer:
    """A running `mlflow server`: `uri` is what MLFLOW_TRACKING_URI gets."""

    uri: str
    artifacts: Path
    log: Path


@pytest.fixture(scope="session")
def mlflow_server(postgres: Postgres, tmp_path_factory) -> Iterator[MlflowServer]:
    """`mlflow server` on the PostgreSQL cluster, serving artifacts itself (as in docker/compose.yaml)."""
    base = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = base / "server.log"
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", postgres.url("mlflow"),
           "--serve-artifacts", "--artifacts-destination", str(base / "artifacts"),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = MlflowServer(f"http://127.0.0.1:{port}", base / "artifacts", log)
    try:
        wait_http(f"{server.uri}/health", timeout=180, proc=proc)
        yield server
    except (RuntimeError, TimeoutError) as err:
        raise RuntimeError(f"{err}; server log:\n{log.read_text()[-3000:]}") from None
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group (it has workers), SIGKILL after 30 s."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def vpr_on(project: Path, tracking_uri: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """`vpr ARGS` in `project` pointed at a shared tracking server, as a worker machine would be."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MLFLOW_TRACKING_URI=tracking_uri)
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=timeout)
