"""The emulator side of the worker processes: one pool per function, a worker per concurrent
invocation, and the run of one invocation on a worker (cold start, timeout, crash, the log and the
REPORT line) into an Outcome.

Each function has its own pool of worker processes (multiprocessing, "forkserver" where available,
else "spawn"), created on demand and reused, at most reserved_concurrency of them. A worker that
times out is killed (with its process group); one that dies is replaced. The worker's own side is
runtime.py.
"""

import datetime
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass

from .limits import INIT_TIMEOUT, LOG_KEEP_BYTES, STOP_GRACE
from .runtime import _worker_main

__all__ = ["Invocation", "Outcome", "FunctionPool", "run_invocation"]


# Starting, polling and reaping worker processes is serialised: multiprocessing's Process.start()
# polls every child, and two threads reading one forkserver child's exit status would garble it.
_process_lock = threading.Lock()


class _Worker:
    def __init__(self, ctx, spec):
        self.log_path = spec["log_path"]
        self.ready = False
        self.init_ms = None
        self.max_rss_mb = 0
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_worker_main, args=(child_conn, spec),
                                   name=f"lambda:{spec['name']}")
        with _process_lock:
            self.process.start()
        child_conn.close()
        self.conn = parent_conn

    def receive(self, timeout):
        """The worker's next message, None on timeout, or ("died", exitcode)."""
        ready = multiprocessing.connection.wait([self.conn, self.process.sentinel], timeout)
        if not ready:
            return None
        if self.conn in ready:
            try:
                return self.conn.recv()
            except (EOFError, OSError):
                pass
        return ("died", self.wait_exit(STOP_GRACE))

    def send(self, msg):
        try:
            self.conn.send(msg)
            return True
        except (OSError, ValueError):
            return False

    def wait_exit(self, timeout):
        """The exit code once the process ended (None if still running after timeout)."""
        if not multiprocessing.connection.wait([self.process.sentinel], timeout):
            return None
        # The sentinel fires as the process exits, a moment before it can be reaped: join.
        with _process_lock:
            self.process.join(STOP_GRACE)
            return self.process.exitcode

    def alive(self):
        return self.wait_exit(0) is None

    def take_log(self):
        """What the worker wrote since the last call (at most LOG_KEEP_BYTES of it)."""
        try:
            with open(self.log_path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                start = max(0, size - LOG_KEEP_BYTES)
                f.seek(start)
                data = f.read()
            os.truncate(self.log_path, 0)
        except OSError:
            return ""
        text = data.decode("utf-8", "replace")
        if start:
            text = f"[... {start} bytes of output not shown ...]\n" + text
        return text

    def terminate(self, grace=0.0):
        """End the worker and its process group: SIGTERM, and SIGKILL after grace seconds."""
        if grace > 0 and self.wait_exit(0) is None:
            self._signal(signal.SIGTERM)
            self.wait_exit(grace)
        self._signal(signal.SIGKILL)      # also whatever the handler started in the group
        self.wait_exit(STOP_GRACE)

    def _signal(self, sig):
        pid = self.process.pid
        if pid is None:
            return
        try:
            os.killpg(pid, sig)           # the worker leads its own process group (setsid)
            return
        except (OSError, AttributeError):
            pass
        if self.wait_exit(0) is None:
            try:
                os.kill(pid, sig)
            except OSError:
                pass

    def close(self):
        """Once terminated: release the pipe and the log file."""
        try:
            self.conn.close()
        except OSError:
            pass
        try:
            os.unlink(self.log_path)
        except OSError:
            pass


class FunctionPool:
    def __init__(self, emulator, name, config):
        self.emulator = emulator
        self.name = name
        self.config = config
        self.slots = threading.Semaphore(config.reserved_concurrency)
        self.lock = threading.Lock()
        self.idle = []            # LIFO: the most recently used worker is reused first
        self.workers = set()
        self.closed = False
        self.seq = 0

    def checkout(self):
        """An idle worker or, if none, a new one (not yet ready). None once the pool is closed."""
        while True:
            with self.lock:
                if self.closed:
                    return None
                worker = self.idle.pop() if self.idle else None
                if worker is None:
                    self.seq += 1
                    seq = self.seq
                    break
            if worker.alive():
                return worker
            self.retire(worker)           # died while idle (a thread of the handler exited?)
        worker = _Worker(self.emulator._mp_context, self.emulator._worker_spec(self, seq))
        with self.lock:
            closed = self.closed
            if not closed:
                self.workers.add(worker)
        if closed:
            self.retire(worker)
            return None
        return worker

    def checkin(self, worker):
        with self.lock:
            if not self.closed and worker in self.workers:
                self.idle.append(worker)
                return
        self.retire(worker)

    def retire(self, worker, grace=0.0):
        """Take a worker out of the pool and end it; returns what it wrote last."""
        with self.lock:
            self.workers.discard(worker)
            if worker in self.idle:
                self.idle.remove(worker)
        worker.terminate(grace)
        output = worker.take_log()
        worker.close()
        return output

    def close(self):
        with self.lock:
            self.closed = True
            idle, busy = list(self.idle), list(self.workers - set(self.idle))
            self.workers.clear()
            self.idle.clear()
        for worker in idle:
            worker.close()                # an idle worker exits on its own when its pipe closes
        # Busy workers are terminated; the invocations waiting for them then clean them up.
        threads = [threading.Thread(target=w.terminate, args=(STOP_GRACE,), daemon=True)
                   for w in idle + busy]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def worker_count(self):
        with self.lock:
            return len(self.workers)


@dataclass
class Invocation:
    request_id: str
    pool: FunctionPool
    payload: bytes
    version: str
    arn: str
    client_context: object = None


@dataclass
class Outcome:
    payload: bytes
    function_error: bool
    log: str


def _lambda_time(t=None):
    """2019-04-04T13:41:31.811Z"""
    dt = datetime.datetime.fromtimestamp(time.time() if t is None else t, datetime.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _exit_description(exitcode):
    """As Lambda (Go) words a runtime's exit: "exit status 1", "signal: segmentation fault"."""
    if exitcode is None:
        return "unknown"
    if exitcode >= 0:
        return f"exit status {exitcode}"
    try:
        name = signal.strsignal(-exitcode) or f"signal {-exitcode}"
    except (ValueError, AttributeError):
        name = f"signal {-exitcode}"
    return "signal: " + name.lower()


def run_invocation(inv, sink=None, stopping=lambda: False):
    """Run one invocation on a worker of its pool (the caller holds a concurrency slot) into an
    Outcome. With a sink, the invocation streams: sink(message) gets the worker's ("chunk", bytes)
    and ("fault", kind, options) messages as they come; what it raises ends the invocation (the
    worker is killed) and propagates. stopping() says whether the emulator is stopping."""
    pool, cfg, rid = inv.pool, inv.pool.config, inv.request_id
    worker = pool.checkout()
    if worker is None:
        return _service_unavailable(inv)
    prefix = ""
    if not worker.ready:                         # cold start: the worker imports the handler
        msg = worker.receive(INIT_TIMEOUT)
        prefix = (f"INIT_START Runtime Version: python:{sys.version_info[0]}."
                  f"{sys.version_info[1]}\n" + worker.take_log())
        if msg is None or msg[0] != "ready":
            prefix += pool.retire(worker)
            return _failed_init(inv, msg, prefix)
        worker.ready = True
        worker.init_ms, worker.max_rss_mb = msg[1], msg[2]
    init_ms, worker.init_ms = worker.init_ms, None        # reported once, on the cold start
    start = time.monotonic()
    sent = worker.send({"request_id": rid, "payload": inv.payload, "version": inv.version,
                        "arn": inv.arn, "client_context": inv.client_context,
                        "deadline_ms": int(time.time() * 1000 + cfg.timeout * 1000),
                        "stream": sink is not None})
    deadline = start + cfg.timeout
    while True:
        if not sent:
            msg = ("died", worker.wait_exit(STOP_GRACE))
            break
        msg = worker.receive(max(0.0, deadline - time.monotonic()))
        if msg is None or msg[0] not in ("chunk", "fault") or sink is None:
            break
        try:
            sink(msg)       # blocks while the client does not read: so does the worker
        except BaseException:
            pool.retire(worker)
            raise
    duration_ms = (time.monotonic() - start) * 1000.0
    if msg is None:                              # timed out: the worker is killed
        output = pool.retire(worker)
        message = f"{_lambda_time()} {rid} Task timed out after {cfg.timeout:.2f} seconds"
        log_text = _compose_log(inv, prefix, output, duration_ms, worker.max_rss_mb, init_ms,
                                after=message + "\n")
        return Outcome(json.dumps({"errorMessage": message}).encode(), True, log_text)
    if msg[0] == "died":                         # crashed: replaced at the next invocation
        output = pool.retire(worker)
        if stopping():
            return _service_unavailable(inv)
        message = (f"RequestId: {rid} Error: Runtime exited with error: "
                   f"{_exit_description(msg[1])}")
        log_text = _compose_log(inv, prefix, output + message + "\nRuntime.ExitError\n",
                                duration_ms, worker.max_rss_mb, init_ms)
        body = {"errorType": "Runtime.ExitError", "errorMessage": message}
        return Outcome(json.dumps(body).encode(), True, log_text)
    kind, value, worker.max_rss_mb = msg
    output = worker.take_log()
    pool.checkin(worker)
    if kind == "ok":
        payload, error = value, False
    elif kind == "too_large":
        limit = value               # the limit that was exceeded
        payload, error = json.dumps({
            "errorMessage": "Response payload size exceeded maximum allowed payload size "
                            f"({limit} bytes).",
            "errorType": "Function.ResponseSizeTooLarge"}).encode(), True
    else:
        payload, error = json.dumps(value).encode(), True
    log_text = _compose_log(inv, prefix, output, duration_ms, worker.max_rss_mb, init_ms)
    return Outcome(payload, error, log_text)


def _failed_init(inv, msg, prefix):
    rid = inv.request_id
    if msg is None:
        message = f"{_lambda_time()} {rid} Task timed out after {INIT_TIMEOUT:.2f} seconds"
        body = {"errorMessage": message}
        extra = message + "\n"
    elif msg[0] == "died":
        message = (f"RequestId: {rid} Error: Runtime exited with error: "
                   f"{_exit_description(msg[1])}")
        body = {"errorType": "Runtime.ExitError", "errorMessage": message}
        extra = message + "\nRuntime.ExitError\n"
    else:
        body = dict(msg[1], requestId=rid)
        extra = ""
    log_text = _compose_log(inv, prefix + extra, "", 0.0, 0, None)
    return Outcome(json.dumps(body).encode(), True, log_text)


def _service_unavailable(inv):
    body = {"errorType": "Runtime.Unknown",
            "errorMessage": f"RequestId: {inv.request_id} Error: the emulator is stopping"}
    return Outcome(json.dumps(body).encode(), True, "")


def _compose_log(inv, prefix, output, duration_ms, max_rss_mb, init_ms, after=""):
    rid = inv.request_id
    if output and not output.endswith("\n"):
        output += "\n"
    billed = max(1, math.ceil(duration_ms))
    report = (f"REPORT RequestId: {rid}\tDuration: {duration_ms:.2f} ms\t"
              f"Billed Duration: {billed} ms\tMemory Size: {inv.pool.config.memory_size} MB\t"
              f"Max Memory Used: {max_rss_mb} MB\t")
    if init_ms is not None:
        report += f"Init Duration: {init_ms:.2f} ms\t"
    return (f"{prefix}START RequestId: {rid} Version: {inv.version}\n{output}"
            f"END RequestId: {rid}\n{report}\n{after}")
