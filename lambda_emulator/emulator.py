"""The Emulator: the Invoke API server in a background thread, a worker pool per function, and the
accounting between them (concurrency slots and throttles, Event invocations, counters, the echo of
function logs, start and stop)."""

import atexit
import datetime
import logging
import multiprocessing
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
import weakref

from .config import (DEFAULT_ACCOUNT_ID, DEFAULT_HOST, DEFAULT_REGION, EmulatorConfigError,
                     FunctionConfig, loopback_host)
from .server import Server, Server6
from .workers import FunctionPool, run_invocation

__all__ = ["Emulator"]

log = logging.getLogger("lambda_emulator")
function_log = logging.getLogger("lambda_emulator.functions")

_live_emulators = weakref.WeakSet()


@atexit.register
def _stop_all():
    # Registered after multiprocessing's own exit hook, so it runs first: workers are not daemonic
    # (handlers may start processes) and multiprocessing would otherwise wait for them.
    for emulator in list(_live_emulators):
        try:
            emulator.stop()
        except Exception:
            pass


def _default_start_method():
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


class Emulator:
    """The Lambda emulator, in a background thread of this process.

    functions maps names to FunctionConfig (or a "module:handler" string, or a config dict);
    paths are directories added to every function's module search path (before the current
    directory). start() binds and serves; stop() ends everything; also a context manager.
    """

    def __init__(self, functions, host=DEFAULT_HOST, port=0, *, paths=(), region=DEFAULT_REGION,
                 account_id=DEFAULT_ACCOUNT_ID, start_method=None, echo_logs=False):
        self.host = loopback_host(host)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise EmulatorConfigError(f"port must be an integer from 0 to 65535, not {port!r}")
        self._requested_port = port
        self.region = region
        self.account_id = account_id
        self.echo_logs = echo_logs
        self.paths = [os.path.abspath(p) for p in paths] + [os.getcwd()]
        self.functions = {}
        for name, cfg in (functions or {}).items():
            if isinstance(cfg, str):
                cfg = FunctionConfig(handler=cfg)
            elif isinstance(cfg, dict):
                cfg = FunctionConfig.from_dict(cfg)
            elif not isinstance(cfg, FunctionConfig):
                raise EmulatorConfigError(f"function {name!r}: expected a FunctionConfig, not "
                                          f"{type(cfg).__name__}")
            self.functions[name] = cfg.validated(name)
        method = start_method or _default_start_method()
        if method not in ("spawn", "forkserver"):
            raise EmulatorConfigError(f"start_method must be spawn or forkserver, not {method!r}")
        self._mp_context = multiprocessing.get_context(method)
        self._pools = {name: FunctionPool(self, name, cfg) for name, cfg in self.functions.items()}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._counters = self._zero_counters()
        self._in_flight = {name: 0 for name in self.functions}
        self._pending_events = {name: 0 for name in self.functions}
        self._connections = set()
        self._server = None
        self._thread = None
        self._stopping = False
        self._log_dir = None

    # -- public API

    def start(self):
        if self._server is not None:
            return self
        if self._stopping:
            raise RuntimeError("a stopped Emulator cannot be restarted")
        server_cls = Server6 if ":" in self.host else Server
        self._server = server_cls((self.host, self._requested_port), self)
        self._log_dir = tempfile.mkdtemp(prefix="vmod-lambda-emulator-")
        _live_emulators.add(self)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.2},
                                        name=f"lambda-emulator:{self.port}", daemon=True)
        self._thread.start()
        log.info("Lambda emulator listening on %s", self.url)
        return self

    def stop(self):
        """Stop serving, close client connections, end all workers. Idempotent."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            self._idle.notify_all()
        server = self._server
        if server is not None:
            server.shutdown()
            server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for pool in self._pools.values():
            pool.close()
        if self._thread is not None:
            self._thread.join(5)
        if self._log_dir:
            shutil.rmtree(self._log_dir, ignore_errors=True)
        _live_emulators.discard(self)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def port(self):
        return self._server.server_address[1] if self._server else self._requested_port

    @property
    def url(self):
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def function_arn(self, name):
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{name}"

    def stats(self):
        """Counters per function: invocations (accepted to run: synchronous ones past the
        concurrency check, Event ones when queued), errors (function errors), throttles (429s);
        gauges: in_flight, pending_events, workers; connections (TCP connections accepted)."""
        with self._lock:
            out = {key: dict(value) if isinstance(value, dict) else value
                   for key, value in self._counters.items()}
            out["in_flight"] = dict(self._in_flight)
            out["pending_events"] = dict(self._pending_events)
        out["workers"] = {name: pool.worker_count() for name, pool in self._pools.items()}
        return out

    def reset(self):
        """Zero the counters (not the gauges)."""
        with self._lock:
            self._counters = self._zero_counters()

    def wait_idle(self, timeout=30.0):
        """Wait until no invocation runs or is queued; True if so within timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while any(self._in_flight.values()) or any(self._pending_events.values()):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping:
                    return False
                self._idle.wait(remaining)
        return True

    # -- internals

    def _zero_counters(self):
        return {"invocations": {n: 0 for n in self.functions},
                "errors": {n: 0 for n in self.functions},
                "throttles": {n: 0 for n in self.functions},
                "connections": 0}

    def _connection_opened(self, conn):
        with self._lock:
            self._connections.add(conn)
            self._counters["connections"] += 1
            stopping = self._stopping
        if stopping:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _connection_closed(self, conn):
        with self._lock:
            self._connections.discard(conn)

    def _try_begin(self, pool):
        """Take a concurrency slot for a synchronous invocation, or count a throttle."""
        if pool.slots.acquire(blocking=False):
            with self._lock:
                self._in_flight[pool.name] += 1
                self._counters["invocations"][pool.name] += 1
            return True
        with self._lock:
            self._counters["throttles"][pool.name] += 1
        return False

    def _end(self, pool):
        pool.slots.release()
        with self._lock:
            self._in_flight[pool.name] -= 1
            self._idle.notify_all()

    def _submit_event(self, inv):
        pool = inv.pool
        with self._lock:
            self._counters["invocations"][pool.name] += 1
            if pool.config.reserved_concurrency == 0:
                self._counters["throttles"][pool.name] += 1
                log.warning("%s: Event invocation %s dropped: reserved concurrency is 0",
                            pool.name, inv.request_id)
                return
            self._pending_events[pool.name] += 1
        threading.Thread(target=self._run_event, args=(inv,), daemon=True,
                         name=f"lambda-event:{pool.name}").start()

    def _run_event(self, inv):
        pool = inv.pool
        acquired = False
        try:
            while not self._stopping:
                if pool.slots.acquire(timeout=0.2):
                    acquired = True
                    break
            with self._lock:
                self._pending_events[pool.name] -= 1
                if acquired:
                    self._in_flight[pool.name] += 1
                self._idle.notify_all()
            if acquired:
                self._execute(inv)
        except Exception:
            log.exception("%s: Event invocation %s failed", pool.name, inv.request_id)
        finally:
            if acquired:
                self._end(pool)

    def _worker_spec(self, pool, seq):
        cfg = pool.config
        name = pool.name
        now = datetime.datetime.now(datetime.timezone.utc)
        stream = f"{now:%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"
        py = f"python{sys.version_info[0]}.{sys.version_info[1]}"
        env = {
            "AWS_LAMBDA_FUNCTION_NAME": name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(cfg.memory_size),
            "AWS_LAMBDA_FUNCTION_TIMEOUT": f"{cfg.timeout:g}",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": stream,
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{py}",
            "LAMBDA_TASK_ROOT": os.getcwd(),
            "_HANDLER": cfg.handler,
        }
        env.update(cfg.environment)
        return {"name": name, "handler": cfg.handler, "memory_size": cfg.memory_size,
                "environment": env, "sys_path": list(cfg.path) + self.paths,
                "log_path": os.path.join(self._log_dir, f"{name}-{seq}.log")}

    def _execute(self, inv, sink=None):
        """Run one invocation on a worker of its pool (a concurrency slot is held). With a sink,
        the invocation streams: sink(message) gets the worker's ("chunk", bytes) and ("fault",
        kind, options) messages as they come; what it raises ends the invocation (the worker is
        killed) and propagates."""
        pool, cfg, rid = inv.pool, inv.pool.config, inv.request_id
        outcome = run_invocation(inv, sink, lambda: self._stopping)
        with self._lock:
            if outcome.function_error:
                self._counters["errors"][pool.name] += 1
        if self.echo_logs and outcome.log:
            for line in outcome.log.rstrip("\n").split("\n"):
                function_log.info("[%s] %s", pool.name, line)
        log.debug("%s: invocation %s done (error=%s, timeout %gs)", pool.name, rid,
                  outcome.function_error, cfg.timeout)
        return outcome
