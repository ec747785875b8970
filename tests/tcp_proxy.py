"""A loopback TCP proxy for the Redis tests: it can hold back a SUBSCRIBE, or move to another server.

``hold_subscribe`` delays the first SUBSCRIBE on its way to Redis, so the
follower is not yet subscribed while the test writes. ``upstream_port`` may
be changed while running: new connections go to the new server and open ones
stay where they are, which is what a DNS name moved by a failover looks like
to a client (ElastiCache's primary endpoint).
"""

from __future__ import annotations

import socket
import threading
import time

__all__ = ["TcpProxy"]


class TcpProxy:
    """Forwards connections on a free loopback port to ``upstream_port`` on 127.0.0.1."""

    def __init__(self, upstream_port: int, *, hold_subscribe: float = 0.0) -> None:
        self.upstream_port = upstream_port
        self.hold_subscribe = hold_subscribe
        #: Set when the held SUBSCRIBE arrived (it reaches Redis ``hold_subscribe`` seconds later).
        self.holding = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()  # the server is down: so is the connection through the proxy
                continue
            self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, is_to_redis: bool) -> None:
        try:
            while data := source.recv(65536):
                is_held = is_to_redis and self.hold_subscribe and b"SUBSCRIBE" in data.upper()
                if is_held and not self.holding.is_set():
                    self.holding.set()
                    time.sleep(self.hold_subscribe)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            sink.close()

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()
