"""Real ``redis-server`` processes on free loopback ports, for the tests and the propagation benchmark.

Nothing is persisted (``--save ''``, no append-only file) and everything
lives in a temporary directory, so a restart starts from an empty store:
exactly the Redis restart the revocation backend has to survive.

Besides the plain server: a TLS server with a certificate from a CA made
here with openssl (:func:`make_test_ca`), a server that requires AUTH and an
ACL user, and a Redis Cluster of three primaries, each with a replica
(:class:`RedisClusterNodes`), as ElastiCache runs them.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from loopback import free_port

__all__ = [
    "CertificateAuthority",
    "RedisClusterNodes",
    "RedisServer",
    "is_redis_installed",
    "make_test_ca",
    "running_redis",
]


def is_redis_installed() -> bool:
    """Whether a ``redis-server`` binary is on PATH."""
    return shutil.which("redis-server") is not None


def is_cluster_tooling_installed() -> bool:
    """Whether ``redis-cli`` (to create a cluster) and ``openssl`` (to make a CA) are on PATH too."""
    return (
        is_redis_installed() and shutil.which("redis-cli") is not None and shutil.which("openssl") is not None
    )


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA made for one test module, and a server certificate it signed for 127.0.0.1."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def make_test_ca(directory: Path) -> CertificateAuthority:
    """A fresh CA and a server certificate for IP 127.0.0.1 and localhost, made with openssl."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=siot-authz test CA",
            "-keyout", "ca.key", "-out", "ca.pem")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "server.key", "-out", "server.csr")  # fmt: skip
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.ext", "-out", "server.pem")  # fmt: skip
    return CertificateAuthority(directory / "ca.pem", directory / "server.pem", directory / "server.key")


class RedisServer:
    """One redis-server process bound to 127.0.0.1; ``kill`` and ``start`` again on the same port.

    ``tls`` serves TLS only, with ``tls``'s certificate; ``options`` are
    more ``redis-server`` arguments, each a list (``["user", "app", "on", ...]``).
    """

    def __init__(
        self,
        *,
        tls: CertificateAuthority | None = None,
        options: list[list[str]] | None = None,
        directory: Path | None = None,
    ) -> None:
        self.port = free_port()
        self.tls = tls
        self.options = options or []
        self._tmp = None if directory is not None else tempfile.TemporaryDirectory(prefix="siot-authz-redis-")
        self.directory = directory if directory is not None else Path(self._tmp.name)  # type: ignore[union-attr]
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _command(self) -> list[str]:
        options = [["bind", "127.0.0.1"], ["save", ""], ["appendonly", "no"], ["dir", str(self.directory)]]
        if self.tls is None:
            options.append(["port", str(self.port)])
        else:
            options += [
                ["port", "0"],
                ["tls-port", str(self.port)],
                ["tls-cert-file", str(self.tls.cert_file)],
                ["tls-key-file", str(self.tls.key_file)],
                ["tls-ca-cert-file", str(self.tls.ca_file)],
                ["tls-auth-clients", "no"],
            ]
        return [
            "redis-server",
            *(part for option in [*options, *self.options] for part in (f"--{option[0]}", *option[1:])),
        ]

    def start(self, *, timeout: float = 10) -> None:
        """Start the server (empty) and wait until it accepts connections."""
        self.launch()
        self.wait_until_answering(timeout=timeout)

    def launch(self) -> None:
        """Start the process without waiting; several servers start faster side by side."""
        assert not self.is_running, "already running"
        self._process = subprocess.Popen(
            self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def wait_until_answering(self, *, timeout: float = 10) -> None:
        """Wait until the launched server answers a PING; killed if it does not in time."""
        assert self._process is not None, "not launched"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._answers():
                return
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited with status {self._process.returncode}")
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout} s")

    def _answers(self) -> bool:
        """Whether the server answers a PING (a refusal for want of AUTH counts: it is up)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as raw:
                sock: socket.socket = raw
                if self.tls is not None:
                    context = ssl.create_default_context(cafile=str(self.tls.ca_file))
                    sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
                sock.sendall(b"PING\r\n")
                return sock.recv(16)[:1] in (b"+", b"-")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no goodbye to clients, nothing saved, like a crash."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)

    def restart(self) -> None:
        """Kill and start again on the same port; the store comes back empty."""
        self.kill()
        self.start()

    def close(self) -> None:
        self.kill()
        if self._tmp is not None:
            self._tmp.cleanup()


@contextmanager
def running_redis(
    *, tls: CertificateAuthority | None = None, options: list[list[str]] | None = None
) -> Iterator[RedisServer]:
    """A started :class:`RedisServer`, killed and cleaned up afterwards."""
    server = RedisServer(tls=tls, options=options)
    try:
        server.start()
        yield server
    finally:
        server.close()


class RedisClusterNodes:
    """Six ``redis-server`` nodes made into a cluster of three primaries, each with one replica.

    ``cluster-node-timeout`` is one second, so a replica takes over a killed
    primary within a few seconds.
    """

    def __init__(self, directory: Path, *, tls: CertificateAuthority | None = None) -> None:
        self.tls = tls
        self.servers: list[RedisServer] = []
        self._clients: dict[int, redis.Redis] = {}
        # TLS everywhere, as ElastiCache Serverless runs it: clients, the cluster bus and replication.
        tls_options = [["tls-cluster", "yes"], ["tls-replication", "yes"]] if tls else []
        for index in range(6):
            node_dir = directory / f"node{index}"
            node_dir.mkdir()
            self.servers.append(
                RedisServer(
                    directory=node_dir,
                    tls=tls,
                    options=[
                        ["cluster-enabled", "yes"],
                        ["cluster-config-file", str(node_dir / "nodes.conf")],
                        ["cluster-node-timeout", "1000"],
                        # A replica syncs at once (Redis 7 waits 5 s for more replicas by
                        # default), so it holds the data when its primary is killed.
                        ["repl-diskless-sync-delay", "0"],
                        ["cluster-port", str(free_port())],
                        *tls_options,
                    ],
                )
            )

    @property
    def url(self) -> str:
        """A ``redis[s]+cluster://`` URL naming one node, as an ElastiCache configuration endpoint does."""
        return f"{'rediss' if self.tls else 'redis'}+cluster://127.0.0.1:{self.servers[0].port}"

    @property
    def _cli_tls(self) -> list[str]:
        return ["--tls", "--cacert", str(self.tls.ca_file)] if self.tls else []

    def start(self, *, timeout: float = 30) -> None:
        for server in self.servers:
            server.launch()
        for server in self.servers:
            server.wait_until_answering()
        addresses = [f"127.0.0.1:{server.port}" for server in self.servers]
        subprocess.run(
            [
                "redis-cli",
                *self._cli_tls,
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        self.wait_until_healthy(timeout=timeout)

    def _node(self, server: RedisServer) -> redis.Redis:
        """One connection per node for the status queries (a redis-cli per query cost a process, and a TLS handshake)."""
        client = self._clients.get(server.port)
        if client is None:
            tls: dict[str, Any] = {"ssl": True, "ssl_ca_certs": str(self.tls.ca_file)} if self.tls else {}
            client = self._clients[server.port] = redis.Redis(
                host="127.0.0.1", port=server.port, socket_timeout=10, decode_responses=True, **tls
            )
        return client

    def _ask(self, server: RedisServer, *command: str) -> dict[str, Any]:
        """A parsed INFO or CLUSTER INFO answer; empty (not healthy yet) if the node cannot answer now."""
        try:
            answer: dict[str, Any] = self._node(server).execute_command(*command)
        except redis.ConnectionError:
            self._clients.pop(server.port).close()  # a new connection next time
            return {}
        return answer

    def _replication(self, server: RedisServer) -> dict[str, Any]:
        return self._ask(server, "INFO", "replication")

    def wait_until_healthy(self, *, timeout: float = 30) -> None:
        """Until every running node says the cluster is ok, three primaries serve all slots and replicas are in sync."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = [server for server in self.servers if server.is_running]
            is_ok = all(self._ask(server, "CLUSTER INFO").get("cluster_state") == "ok" for server in running)
            # A replica that never finished its sync will not take over a killed primary.
            replicas_synced = all(
                self._replication(server).get("master_link_status") != "down" for server in running
            )
            if is_ok and replicas_synced and len(self.primaries()) == 3:
                return
            time.sleep(0.1)
        raise RuntimeError(f"the cluster was not healthy within {timeout} s")

    def primaries(self) -> list[RedisServer]:
        """The running nodes that are primaries now."""
        return [
            server
            for server in self.servers
            if server.is_running and self._replication(server).get("role") == "master"
        ]

    def server_on(self, port: int) -> RedisServer:
        return next(server for server in self.servers if server.port == port)

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        for server in self.servers:
            server.close()
