"""A TCP proxy the test controls, to cut a process off its database (never by
stopping the shared server): ``cut()`` resets every open connection and refuses new
ones; ``restore()`` lets them through again."""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._reset: set[socket.socket] = set()  # cut: their pumps close them with RST
        self._lock = threading.Lock()
        self._cut = threading.Event()
        self._closed = threading.Event()
        threading.Thread(target=self._accept, name="tcp-proxy", daemon=True).start()

    def cut(self) -> None:
        """Reset every connection and refuse new ones until ``restore``."""
        self._cut.set()
        with self._lock:
            for s in self._open:
                _wake_for_reset(s)
            self._reset.update(self._open)
            self._open.clear()

    def restore(self) -> None:
        self._cut.clear()

    def close(self) -> None:
        self._closed.set()
        self.cut()
        self._listener.close()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._cut.is_set():
                _refuse(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _refuse(client)
                continue
            server.settimeout(None)
            with self._lock:
                self._open.update((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                cut = source in self._reset or sink in self._reset
                for s in (source, sink):
                    self._open.discard(s)
                    self._reset.discard(s)
            for s in (source, sink):
                if not cut:  # a cut connection gets no FIN, only the RST
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)
                s.close()


_LINGER_0 = b"\x01\x00\x00\x00\x00\x00\x00\x00"  # struct linger {on, 0 s}: close sends RST


def _refuse(s: socket.socket) -> None:
    """Close with RST, as a network failure looks to the peer."""
    with contextlib.suppress(OSError):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)
    s.close()


def _wake_for_reset(s: socket.socket) -> None:
    """Make the pump blocked in ``recv`` on ``s`` close it with RST.

    Closing it here would not do: while a thread is blocked in ``recv`` on a socket
    the kernel keeps it open, so a peer waiting for an answer (a query in flight)
    would wait forever. ``shutdown(SHUT_RD)`` wakes that ``recv`` without sending
    anything; the pump then closes the socket, and SO_LINGER 0 makes it an RST."""
    with contextlib.suppress(OSError):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)
        s.shutdown(socket.SHUT_RD)
