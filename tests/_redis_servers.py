"""Throwaway redis-server processes for tests that kill their server or need a cluster.

Each server runs on a free loopback port with its own temporary directory, and is stopped by its
pid (never by name) with bounded waits. Without the binaries, :func:`redis_server_or_skip` and
:func:`redis_cluster_or_skip` skip with the reason (fail under ``CI=true``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

from _services import Throwaway, started_or_skip

__all__ = ["RedisCluster", "RedisServer", "redis_cluster_or_skip", "redis_server_or_skip"]


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port(cluster: bool = False) -> int:
    """A free loopback port; for a cluster node, one whose bus port (+10000) is free as well."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if not cluster or (port + 10000 <= 65535 and _port_is_free(port + 10000)):
            return port
    raise RuntimeError("no free loopback port pair found")


def _ping(port: int, tls: bool = False) -> str | None:
    """The server's answer to PING, or None when nothing answers yet."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as plain:
            sock = plain
            if tls:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                sock = context.wrap_socket(plain)
            sock.sendall(b"PING\r\n")
            return sock.recv(64).decode(errors="replace")
    except OSError:
        return None


class RedisServer(Throwaway):
    """One redis-server with AOF on every write (``appendfsync always``); restartable on its port.

    With ``tls`` it listens for TLS only, with a self-signed certificate made by ``openssl`` in its
    directory (``self.certificate``, to trust as the CA).
    """

    def __init__(self, *extra: str, cluster: bool = False, tls: bool = False) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="botstate-redis-"))
        self.port = _free_port(cluster)
        self.extra = list(extra)
        self.tls = tls
        self.certificate = self.dir / "cert.pem"
        self.process: subprocess.Popen[bytes] | None = None
        if tls:
            key = self.dir / "key.pem"
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                 "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                 "-keyout", str(key), "-out", str(self.certificate)],
                capture_output=True, timeout=30, check=True,
            )  # fmt: skip
            self.extra += [
                "--tls-port", str(self.port), "--port", "0",
                "--tls-cert-file", str(self.certificate), "--tls-key-file", str(key),
                "--tls-ca-cert-file", str(self.certificate), "--tls-auth-clients", "no",
            ]  # fmt: skip

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> None:
        args = [
            "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--daemonize", "no",
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--logfile", str(self.dir / "server.log"),
            *self.extra,
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: {self.log()}")
            if (_ping(self.port, self.tls) or "").startswith("+PONG"):
                return
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def log(self) -> str:
        try:
            return (self.dir / "server.log").read_text()[-2000:]
        except OSError:
            return ""

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 15.0) -> None:
        """Signal the server by its pid and wait (bounded) until it is gone."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout)

    def destroy(self) -> None:
        self.kill(signal.SIGTERM)
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisCluster(Throwaway):
    """Three primaries without replicas, every slot assigned, on loopback."""

    def __init__(self, size: int = 3) -> None:
        self.nodes = [
            RedisServer(
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "2000",
                "--appendfsync", "no",
                cluster=True,
            )
            for _ in range(size)
        ]  # fmt: skip

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self, timeout: float = 30.0) -> None:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        result = subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {result.stdout}{result.stderr}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._state(node.port) == "ok" for node in self.nodes):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the cluster did not reach cluster_state:ok within {timeout}s")

    @staticmethod
    def _state(port: int) -> str | None:
        result = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(port), "cluster", "info"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        for line in result.stdout.splitlines():
            if line.startswith("cluster_state:"):
                return line.split(":", 1)[1].strip()
        return None

    def destroy(self) -> None:
        for node in self.nodes:
            node.destroy()


def redis_server_or_skip(tls: bool = False) -> RedisServer:
    """A started throwaway server (TLS-only with ``tls``), or skip with the reason."""
    binaries = ["redis-server", "redis-cli", *(["openssl"] if tls else [])]
    return started_or_skip("redis-server", lambda: RedisServer(tls=tls), binaries)


def redis_cluster_or_skip() -> RedisCluster:
    """A started throwaway 3-primary cluster, or skip with the reason."""
    return started_or_skip("Redis cluster", RedisCluster, ["redis-server", "redis-cli"])
