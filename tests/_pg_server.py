"""A throwaway PostgreSQL server for tests that stop, restart or sabotage their server.

``initdb`` into a fresh temporary directory, ``pg_ctl start`` on a free loopback port, and a stop that
signals the postmaster by its pid (never by name), with bounded waits. PostgreSQL refuses to run as
root: as root the server runs as the ``postgres`` user through ``runuser``/``setpriv``. Without the
binaries or such a user, :func:`pg_server_or_skip` skips (fails under ``CI=true``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from _services import Throwaway, started_or_skip

__all__ = ["PgServer", "pg_server_or_skip"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run_as() -> tuple[list[str], int | None]:
    """The command prefix that runs the server binaries, and the uid that must own the data dir."""
    if os.geteuid() != 0:
        return [], None
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("running as root and there is no 'postgres' user to run the server as") from None
    if shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--"], user.pw_uid
    if shutil.which("setpriv"):
        return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups"], user.pw_uid
    raise RuntimeError("running as root and neither runuser nor setpriv is available")


class PgServer(Throwaway):
    """One PostgreSQL cluster in a temporary directory; ``start``/``stop`` may repeat on one port."""

    def __init__(self) -> None:
        self._prefix, owner = _run_as()
        self.root = Path(tempfile.mkdtemp(prefix="botstate-pg-"))
        if owner is not None:
            os.chown(self.root, owner, -1)
        self.data = self.root / "data"
        self.port = _free_port()
        self._run(
            ["initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"],
            timeout=60,
        )

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, args: list[str], timeout: float) -> None:
        result = subprocess.run(
            [*self._prefix, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({result.returncode}): {result.stderr or result.stdout}")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = self.root / "server.log"
        self._run(
            ["pg_ctl", "-D", str(self.data), "-o", options, "-l", str(log), "-w", "-t", "30", "start"], 40
        )

    def pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT to the postmaster: sessions are terminated); SIGKILL if it lingers."""
        pid = self.pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def pg_server_or_skip() -> PgServer:
    """A started throwaway server, or skip with the reason (fail under ``CI=true``)."""
    return started_or_skip("PostgreSQL server", PgServer, ["initdb", "pg_ctl", "postgres"])
