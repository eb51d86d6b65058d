"""The call's deadline for the boto3 transport, head included (issue 20).

botocore (urllib3, http.client) reads an answer's head with a timeout per recv(): an endpoint that
trickles its answer a byte at a time holds the worker, and its connection, for as long as it
likes. The direct transport closes the connection at the call's deadline; this module does the
same for boto3's:

- one watchdog thread per process (a daemon, started by the first call with a deadline) keeps a
  heap of (deadline, Call); at a call's deadline it shuts its connection's socket down
  (shutdown(SHUT_RDWR), never close() from another thread), so that the worker's blocked send()
  or recv() returns at once and botocore raises; the transport then sees Call.expired and makes
  the call's outcome its timeout;
- the worker's connection is made known to its Call by the connection class installed in the
  client's HTTP session (install()): subclasses of botocore's AWSHTTP(S)Connection that attach
  themselves to the Call of the current thread (watch()) when a request is sent and detach when
  they are closed. Outside watch() they are botocore's connections, unchanged.

A Call's lock orders the two threads: the watchdog shuts a socket only while the Call has not
ended and the connection is attached (not closed), so it never touches a socket after its call
ended or a descriptor that was closed and reused. A connection whose socket was shut down is
closed by urllib3 (an error ends its exchange) and never goes back to the pool.

The connection classes reach the client through botocore's URLLib3Session attributes
(client._endpoint.http_session._pool_classes_by_scheme): botocore's, not public ones. Where they
are missing (another botocore), install() returns False and only the answer's body keeps the
deadline (Boto3Transport._read_payload).
"""

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time

from botocore.awsrequest import (AWSHTTPConnection, AWSHTTPConnectionPool, AWSHTTPSConnection,
                                 AWSHTTPSConnectionPool)

__all__ = ["Call", "current", "install", "watch"]


class Call:
    """One call's deadline (time.monotonic()) and the connection it is using."""

    __slots__ = ("deadline", "lock", "conn", "expired", "ended")

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.lock = threading.Lock()
        self.conn = None            # the connection attached (None: none yet, or closed)
        self.expired = False        # the deadline came before the call ended
        self.ended = False          # the call ended (watch() left): never touched again

    def attach(self, conn):
        """conn sends this call's request. If the deadline has passed already (it came while
        the connection was being made), its socket is shut down now."""
        with self.lock:
            if self.ended:
                return
            self.conn = conn
            conn._vl_call = self
            if self.expired:
                _shut(conn)

    def detach(self, conn):
        """conn is being closed: its socket is not this call's any more."""
        with self.lock:
            if self.conn is conn:
                self.conn = None

    def let_go(self, conn) -> bool:
        """The answer was read whole on conn: True if the deadline has not passed, and conn is
        not the watchdog's to shut any more (it may go back to the pool); False: the deadline
        came first, conn is to be closed."""
        with self.lock:
            if self.expired:
                return False
            if self.conn is conn:
                self.conn = None
            return True

    def expire(self):
        """The watchdog, at the deadline: the call's socket shut down, unless it ended."""
        with self.lock:
            if self.ended:
                return
            self.expired = True
            if self.conn is not None:
                _shut(self.conn)

    def end(self):
        with self.lock:
            self.ended = True
            self.conn = None


def _shut(conn):
    sock = getattr(conn, "sock", None)
    if sock is None:
        return
    try:
        # socket.socket's own shutdown, also for an SSLSocket (whose shutdown() drops its SSL
        # object under the reading thread): the descriptor, both ways.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except (OSError, ValueError):   # already closed by its peer, or not connected yet
        pass


class _Watchdog:
    """The thread that expires Calls at their deadlines: a heap, entries of ended calls left in
    it until their time (cheaper than removing them one by one), and the heap rebuilt without
    them once they are most of it (calls of a long timeout, many a second)."""

    COMPACT = 1024          # ended calls in the heap before a rebuild is worth it

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._heap = []
        self._stale = 0                     # about how many entries are of ended calls
        self._seq = itertools.count()       # ties: never compare two Calls
        self._thread = None

    def ended(self):
        """A call of the heap ended."""
        with self._cond:
            self._stale += 1
            heap = self._heap
            if self._stale > self.COMPACT and 2 * self._stale > len(heap):
                heap[:] = [e for e in heap if not e[2].ended]
                heapq.heapify(heap)
                self._stale = 0

    def add(self, call: Call):
        with self._cond:
            heapq.heappush(self._heap, (call.deadline, next(self._seq), call))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="vmod-lambda-boto3-deadlines")
                self._thread.start()
            elif self._heap[0][2] is call:
                self._cond.notify()         # an earlier deadline than the one it waits for

    def _run(self):
        heap = self._heap
        while True:
            with self._cond:
                while True:
                    if not heap:
                        self._cond.wait()
                        continue
                    left = heap[0][0] - time.monotonic()
                    if left <= 0:
                        call = heapq.heappop(heap)[2]
                        if call.ended and self._stale > 0:
                            self._stale -= 1
                        break
                    self._cond.wait(left)
            if not call.ended:
                call.expire()

    def _after_fork(self):
        # A child process has no watchdog thread: the first call there starts its own.
        self._cond = threading.Condition(threading.Lock())
        self._heap = []
        self._stale = 0
        self._thread = None


_watchdog = _Watchdog()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_watchdog._after_fork)

_local = threading.local()


def current():
    """The Call of this thread's watch() (None: none)."""
    return getattr(_local, "call", None)


@contextlib.contextmanager
def watch(deadline):
    """The calls of this thread under it keep deadline (time.monotonic(); None or 0: none): yields
    the Call (None without a deadline), whose expired says whether the deadline cut it short."""
    if not deadline:
        yield None
        return
    call = Call(deadline)
    outer = getattr(_local, "call", None)
    _local.call = call
    _watchdog.add(call)
    try:
        yield call
    finally:
        call.end()
        _local.call = outer
        _watchdog.ended()


class _DeadlineConnection:
    """Attaches the connection to the current thread's Call for each request it sends."""

    _vl_call = None

    def request(self, *args, **kwargs):
        call = getattr(_local, "call", None)
        if call is not None:
            call.attach(self)
        return super().request(*args, **kwargs)

    def getresponse(self, *args, **kwargs):
        call = getattr(_local, "call", None)
        if call is not None:
            # The socket of a connection made during request() (the deadline may have passed
            # while it was being made): attach() shuts it down if so.
            call.attach(self)
        return super().getresponse(*args, **kwargs)

    def close(self):
        call = self._vl_call
        if call is not None:
            self._vl_call = None
            call.detach(self)
        super().close()


class DeadlineHTTPConnection(_DeadlineConnection, AWSHTTPConnection):
    pass


class DeadlineHTTPSConnection(_DeadlineConnection, AWSHTTPSConnection):
    pass


class DeadlineHTTPConnectionPool(AWSHTTPConnectionPool):
    ConnectionCls = DeadlineHTTPConnection


class DeadlineHTTPSConnectionPool(AWSHTTPSConnectionPool):
    ConnectionCls = DeadlineHTTPSConnection


_POOLS = {"http": DeadlineHTTPConnectionPool, "https": DeadlineHTTPSConnectionPool}


def install(client) -> bool:
    """The connections of client's HTTP session from now on are the ones above (idempotent).
    False: this botocore has no such session attributes (see the module's docstring)."""
    session = getattr(getattr(client, "_endpoint", None), "http_session", None)
    pools = getattr(session, "_pool_classes_by_scheme", None)
    if not isinstance(pools, dict):      # pragma: no cover - another botocore
        return False
    if pools.get("http") is DeadlineHTTPConnectionPool:
        return True
    # The session's pool managers share this dict: changed in place, it holds for them all.
    pools.update(_POOLS)
    manager = getattr(session, "_manager", None)
    if manager is not None:
        # Pools made before (none, unless the client was used): their idle connections closed,
        # the next requests get pools of the classes above.
        manager.clear()
    return True
