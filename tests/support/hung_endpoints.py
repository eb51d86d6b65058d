"""Loopback endpoints that never let a connection be opened, for the tests of non-blocking connects
and TLS handshakes (issue 17): FullBacklog (a connect that gets no answer, as to a blackholed
address) and SilentTLS (a connection accepted, its ClientHello never answered)."""

import socket
import time

__all__ = ["FullBacklog", "SilentTLS", "closed_port"]


class FullBacklog:
    """A port whose connects hang: listen(0) and its accept queue filled with connections that
    are never accepted; Linux then drops every further SYN (tcp_conn_request: the accept queue is
    full), so a connect waits for an answer until its timeout."""

    def __enter__(self):
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(0)
        self.addr = self.srv.getsockname()
        self.fill = []
        for _ in range(4):
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(self.addr)
            self.fill.append(c)
        time.sleep(0.2)
        probe = socket.socket()
        probe.settimeout(0.5)
        try:
            probe.connect(self.addr)
            hangs = False
        except socket.timeout:
            hangs = True
        finally:
            probe.close()
        assert hangs, "the full accept queue did not make a connect hang"
        return self

    @property
    def url(self):
        return f"http://127.0.0.1:{self.addr[1]}"

    def __exit__(self, *exc):
        for c in self.fill:
            c.close()
        self.srv.close()


class SilentTLS:
    """An https:// endpoint that accepts connections (the kernel completes them: a backlog of
    16, never accept()ed) and never answers the ClientHello."""

    def __enter__(self):
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(16)
        self.addr = self.srv.getsockname()
        return self

    @property
    def url(self):
        return f"https://127.0.0.1:{self.addr[1]}"

    def __exit__(self, *exc):
        self.srv.close()


def closed_port() -> int:
    """A loopback port nothing listens on (a connect is refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
