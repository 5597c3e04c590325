"""A TCP proxy in front of PostgreSQL that the fault tests break on purpose.

The service under test connects through it, so the test can, without touching the shared
server: ``drop()`` every connection at once (what clients see when the server restarts),
``stop()`` listening and ``start()`` again (the server down, connections refused), and
``pause()`` / ``resume()`` the bytes in both directions (a frozen server: sockets open, no
answer, as under SIGSTOP).
"""

from __future__ import annotations

import select
import socket
import threading
from contextlib import suppress


class FaultProxy:
    """Forward 127.0.0.1:<port> to ``upstream``; see the module docstring for the faults."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._flowing = threading.Event()
        self._flowing.set()
        self._listener: socket.socket | None = None
        self.port = self._listen(0)

    def _listen(self, port: int) -> int:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return int(listener.getsockname()[1])

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, server))
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while True:
                self._flowing.wait()
                readable, _, _ = select.select([a, b], [], [], 0.1)
                for source in readable:
                    if not self._flowing.is_set():
                        break  # paused since select: hold the bytes in the kernel
                    data = source.recv(65536)
                    if not data:
                        return
                    peers[source].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            self._close_pair(a, b)

    def _close_pair(self, a: socket.socket, b: socket.socket) -> None:
        with self._lock:
            if (a, b) in self._pairs:
                self._pairs.remove((a, b))
        for sock in (a, b):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def drop(self) -> None:
        """Cut every open connection (both sides), as a server restart does."""
        with self._lock:
            pairs = list(self._pairs)
        for a, b in pairs:
            self._close_pair(a, b)

    def stop(self) -> None:
        """Stop listening and cut every connection: the server is down."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self.drop()

    def start(self) -> None:
        """Listen again on the same port: the server is back."""
        self._listen(self.port)

    def pause(self) -> None:
        """Hold every byte in both directions: the server is frozen."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def close(self) -> None:
        self.resume()
        self.stop()
