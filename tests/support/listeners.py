"""Ending a test's own accept() loop safely (stop_listening), and finding the threads that a test
left blocked in a socket call on a socket closed under them (stranded_threads: tests/conftest.py
fails the test that leaves one).

Why: close() of a socket that another thread is blocked in accept() (or recv()) on does not wake
that thread. Linux keeps the old socket alive under the blocked call, and frees the descriptor
NUMBER, which the next socket the process opens takes (the lowest free one). When a signal then
interrupts the blocked call without running a handler, the kernel restarts it with the same
arguments: the same fd number, now the new socket. SIGCHLD does so whenever a child exits while the
thread that started it blocks every signal, as Python's subprocess does around its vfork() (so the
signal is not discarded but delivered to another thread: the blocked one); a ptrace stop (strace,
py-spy) does so too. The stranded thread then accepts, reads or closes the connections of a later
test's server: tests/varnish/test_cluster.py's in-process emulator lost a connection (a 503) and
stayed blocked in its own accept() (the teardown hung) after the compiled layer, in one process.

So: shut the listening socket down first (Linux wakes a blocked accept() with EINVAL), wait for
the thread to leave, and only then close it."""

import socket
import sys
import threading
import time

__all__ = ["stop_listening", "stranded_threads"]


def stop_listening(sock: socket.socket, thread: threading.Thread, timeout: float = 5.0):
    """Stop the thread that accepts on sock and close sock, in that order (see the module's
    docstring). AssertionError if the thread is still in accept() after timeout seconds (it then
    keeps sock open: a stranded accept() on a live socket takes nobody else's connections)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass                    # not listening (any more): nothing blocks on it
    thread.join(timeout)
    assert not thread.is_alive(), f"{thread.name} is still in accept() after shutdown()"
    sock.close()


# The methods of socket.py (Python code, so a frame shows its socket) in which a thread waits in
# the kernel on a socket: socket.accept, and SocketIO.readinto/write (makefile()'s reads, writes).
_BLOCKING = {"accept", "readinto", "write"}


def _waiting_on_closed(frame) -> str:
    """What frame (a thread's innermost Python frame and its callers) waits on, if it is a
    socket call whose socket is closed: "accept() on a closed socket", else ""."""
    depth = 0
    while frame is not None and depth < 4:
        code = frame.f_code
        if code.co_name in _BLOCKING and code.co_filename.endswith("socket.py"):
            sock = frame.f_locals.get("self")
            sock = getattr(sock, "_sock", sock)         # SocketIO.readinto/write: its socket
            if isinstance(sock, socket.socket) and sock.fileno() == -1:
                return f"{code.co_name}() on a closed socket"
        frame = frame.f_back
        depth += 1
    return ""


def stranded_threads(settle: float = 0.5) -> list:
    """The threads blocked in a socket call on a socket that was closed under them (see the
    module's docstring): [(thread ident, thread name, what it waits on)]. A thread seen so is looked at again
    after settle seconds (one that was on its way out, with EBADF, is gone by then)."""
    def look():
        frames = sys._current_frames()
        me = threading.get_ident()
        out = {}
        for t in threading.enumerate():
            if t.ident == me or t.ident not in frames:
                continue
            what = _waiting_on_closed(frames[t.ident])
            if what:
                out[t.ident] = (t.ident, t.name, what)
        return out
    first = look()
    if not first:
        return []
    time.sleep(settle)
    again = look()
    return [again[i] for i in first if i in again]
