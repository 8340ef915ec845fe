"""A small TCP proxy for fault tests: it can cut a connection after Redis executed a
command but before its reply reaches the client (the "lost acknowledgement" case).

`cut_replies_to(marker, times)` arms the proxy: the next `times` requests whose bytes
contain `marker` are forwarded to the server, the server's reply is swallowed, and the
client's connection is closed. Everything else passes through unchanged.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class CuttingProxy:
    """127.0.0.1:<port> → target, one thread pair per client connection."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._marker = b""
        self._cuts_left = 0
        self.cuts = 0
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._accepter = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)
        self._accepter.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def cut_replies_to(self, marker: bytes, times: int = 1) -> None:
        with self._lock:
            self._marker = marker
            self._cuts_left = times

    @property
    def armed(self) -> bool:
        with self._lock:
            return self._cuts_left > 0

    def _accept(self) -> None:
        while True:
            try:
                client, _address = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._closed:
                    client.close()
                    server.close()
                    return
                self._sockets.update((client, server))
            cut = threading.Event()
            for source, sink, upstream in ((client, server, True), (server, client, False)):
                thread = threading.Thread(
                    target=self._pump, args=(source, sink, upstream, cut), daemon=True
                )
                with self._lock:
                    self._threads.append(thread)
                thread.start()

    def _pump(
        self, source: socket.socket, sink: socket.socket, upstream: bool, cut: threading.Event
    ) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if upstream:
                    with self._lock:
                        if self._cuts_left > 0 and self._marker in data:
                            self._cuts_left -= 1
                            self.cuts += 1
                            cut.set()  # swallow the reply of this request
                    sink.sendall(data)
                elif cut.is_set():
                    break  # the reply arrived: drop it and cut the connection
                else:
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            self._drop(source)
            self._drop(sink)

    def _drop(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()
        with self._lock:
            self._sockets.discard(sock)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sockets = list(self._sockets)
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        with contextlib.suppress(OSError):
            self._listener.close()
        for sock in sockets:
            self._drop(sock)
        self._accepter.join(5)
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(5)

    def __enter__(self) -> CuttingProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
