"""A loopback TCP proxy that can drop a connection between a request and its reply.

It forwards bytes both ways. Armed with a marker, it forwards the first client
chunk that contains the marker to Redis, lets Redis answer (so the command has
surely run), throws the reply away and closes the client's connection: exactly
a connection lost between an XADD and its reply.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class DroppingProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._marker: bytes | None = None
        self._cut: set[socket.socket] = set()  # client sockets whose replies are dropped
        self.num_drops = 0
        self.num_marked_chunks = 0  # chunks seen that contain the marker, dropped or not
        self._seen_marker: bytes | None = None
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def drop_reply_once(self, marker: bytes) -> None:
        with self._lock:
            self._marker = self._seen_marker = marker

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._replies, args=(upstream, client), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket) -> None:
        try:
            while data := client.recv(1 << 20):
                with self._lock:
                    if self._seen_marker is not None and self._seen_marker in data:
                        self.num_marked_chunks += 1
                    if self._marker is not None and self._marker in data:
                        self._marker = None
                        self._cut.add(client)
                upstream.sendall(data)
        except OSError:
            pass

    def _replies(self, upstream: socket.socket, client: socket.socket) -> None:
        try:
            while data := upstream.recv(1 << 20):
                with self._lock:
                    cut = client in self._cut
                    if cut:
                        self.num_drops += 1
                if cut:
                    break
                client.sendall(data)
        except OSError:
            pass
        for sock in (upstream, client):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self._listener.close()
