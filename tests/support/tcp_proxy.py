"""A loopback TCP proxy in front of a stack service, for network faults without killing
the shared service: drop() closes every connection through it and refuses new ones (as a
dead server would), restore() accepts again. A real fault on the wire, not a mock."""

import socket
import struct
import threading
from types import TracebackType
from typing import Self

CHUNK = 65536
LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 seconds


class TcpProxy:
    """Listens on 127.0.0.1:<port> and forwards each connection to `target`."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.dropped = False
        self.lock = threading.Lock()
        self.sockets: set[socket.socket] = set()
        self.closed = False
        threading.Thread(target=self.accept, daemon=True, name=f"proxy-{self.port}").start()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def drop(self) -> None:
        """Closes every open connection; new ones are refused until restore()."""
        with self.lock:
            self.dropped = True
            self.close_all()

    def restore(self) -> None:
        with self.lock:
            self.dropped = False

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.close_all()
        self.listener.close()

    def close_all(self) -> None:
        for sock in self.sockets:
            self.reset(sock)
        self.sockets.clear()

    def accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                if self.dropped or self.closed:
                    self.reset(client)
                    continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                self.reset(client)
                continue
            server.settimeout(None)
            with self.lock:
                self.sockets.update((client, server))
            threading.Thread(target=self.pipe, args=(client, server), daemon=True).start()
            threading.Thread(target=self.pipe, args=(server, client), daemon=True).start()

    @staticmethod
    def reset(sock: socket.socket) -> None:
        """Closes at once, unsent data discarded, as a crashed server would. shutdown() first
        wakes the thread blocked reading it (close() alone would not)."""
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed by its peer
        sock.close()

    def pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(CHUNK):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self.lock:
                for sock in (source, sink):
                    if sock in self.sockets:
                        self.sockets.discard(sock)
                        sock.close()
