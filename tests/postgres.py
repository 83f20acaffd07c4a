"""A real PostgreSQL server for a test: Debian's package, a fresh cluster in a temporary folder,
listening on loopback only, stopped and deleted afterwards.

Where the server's programs are missing the test is skipped, unless BERTFIT_REQUIRE_POSTGRES is
set (`.ci/run` installs the package and sets it), so CI fails rather than skips. PostgreSQL
refuses to run as root: as root, the cluster is created and run as the package's `postgres`
user (runuser), in a folder that user owns.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

SERVER_USER = "postgres"  # the account Debian's package creates
DATABASE = "bertfit_search"


def server_programs() -> Path | None:
    """The folder holding initdb and pg_ctl: on PATH, or where Debian installs them."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_server_user(command: list[str]) -> list[str]:
    """The command as the `postgres` account when we are root (the server will not run as root);
    runuser lives in sbin, which a minimal PATH (`env -i PATH=/usr/bin:/bin`) leaves out."""
    if os.geteuid() != 0:
        return command
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    runuser = shutil.which("runuser", path=search) or "runuser"
    return [runuser, "-u", SERVER_USER, "--", *command]


def run(command: list[str], log: Path) -> None:
    done = subprocess.run(as_server_user(command), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = log.read_text()[-2000:] if log.exists() else ""
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}{tail}")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """`postgresql://postgres@127.0.0.1:PORT/bertfit_search` on a server of the test's own."""
    programs = server_programs()
    if programs is None:
        if os.environ.get("BERTFIT_REQUIRE_POSTGRES"):
            raise RuntimeError("BERTFIT_REQUIRE_POSTGRES is set but initdb was not found")
        pytest.skip("PostgreSQL's server is not installed (Debian: apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="bertfit-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, SERVER_USER, SERVER_USER)
    cluster, log, port = folder / "data", folder / "server.log", free_port()
    run([str(programs / "initdb"), "-D", str(cluster), "-U", SERVER_USER, "--auth=trust"], log)
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder}"
    pg_ctl = str(programs / "pg_ctl")
    run([pg_ctl, "-D", str(cluster), "-o", options, "-l", str(log), "-w", "start"], log)
    try:
        createdb = shutil.which("createdb") or str(programs / "createdb")
        run([createdb, "-h", "127.0.0.1", "-p", str(port), "-U", SERVER_USER, DATABASE], log)
        yield f"postgresql://{SERVER_USER}@127.0.0.1:{port}/{DATABASE}"
    finally:
        run([pg_ctl, "-D", str(cluster), "-m", "immediate", "-w", "stop"], log)
        shutil.rmtree(folder, ignore_errors=True)
