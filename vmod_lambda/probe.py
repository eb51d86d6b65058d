"""Health probes for obj.backend(): Varnish's probe semantics, with an invocation as the poke.

A `.url` or `.request` probe becomes a synthetic request that goes through the same mapping as a real
fetch (so the function sees an ordinary GET), invoked through the object's own client: in varnishd
each poke first takes one of the object's pool_size slots (slot, from the director), so probes and
fetches share the object's connections and its limit, as in movableink's vmod-lambda (with
pool_size = 1, one connection carries probes and fetches in turn). A poke is good when the invocation succeeded, the
function raised no error and the inner HTTP status is `.expected_response` (default 200). Window,
threshold, initial, interval and timeout, the bitmaps, the Backend_health log line and the
backend.list output follow Varnish's own probes (bin/varnishd/cache/cache_backend_probe.c).
"""

import threading
import time
from http.client import responses as REASONS
from dataclasses import dataclass, replace
from typing import Callable, Optional

from . import fetch
from ._request import Request
from .invoker import InvokeError, Invoker

AVG_RATE = 4
# The bitmaps of tbl/backend_poll.h, in its order; a Lambda probe has no IP family of its own.
BITMAPS = [("good_ipv4", "4", "Good IPv4", False), ("good_ipv6", "6", "Good IPv6", False),
           ("good_unix", "U", "Good UNIX", False), ("err_xmit", "x", "Error Xmit", False),
           ("good_xmit", "X", "Good Xmit", False), ("err_recv", "r", "Error Recv", False),
           ("good_recv", "R", "Good Recv", False), ("happy", "H", "Happy", True)]
MASK = (1 << 64) - 1
UNSET = 0xFFFFFFFF          # `.initial` not given (~0U in struct vrt_backend_probe)


@dataclass(frozen=True)
class ProbeSpec:
    url: Optional[str] = None
    request: Optional[str] = None
    timeout: float = 0.0
    interval: float = 0.0
    exp_status: int = 0
    window: int = 0
    threshold: int = 0
    initial: int = UNSET

    def with_defaults(self) -> "ProbeSpec":
        """Varnish's defaults (vbp_set_defaults)."""
        s = replace(self, timeout=self.timeout or 2.0, interval=self.interval or 5.0,
                    window=self.window or 8, threshold=self.threshold or 3,
                    exp_status=self.exp_status or 200)
        initial = s.threshold - 1 if s.initial == UNSET else s.initial
        return replace(s, window=min(s.window, 64), initial=min(initial, s.threshold))

    def request_record(self):
        """The probe's request as the record a fetch's request is (_request.Request): a GET of
        .url, or .request. A probe's .request is raw HTTP text by definition (Varnish sends it
        as it is): this is the one parser of request text in vmod-lambda, every other request
        comes collected from Varnish's struct http."""
        if self.request:
            lines = [ln for ln in self.request.replace("\r\n", "\n").split("\n") if ln]
            first = (lines[0].split(" ") + ["", "", ""])[:3] if lines else ["GET", "/", "HTTP/1.1"]
            headers = []
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers.append((name, value.strip(" \t")))
            return Request(first[0], first[1], first[2], headers)
        return Request("GET", self.url or "/", "HTTP/1.1")


class ProbeState:
    """The bookkeeping of one probe target: bitmaps, good count, average, health."""

    def __init__(self, spec: ProbeSpec):
        self.spec = spec
        self.healthy = True
        self.reset()

    def reset(self):
        self.avg = 0.0
        self.rate = 0.0
        self.last = 0.0
        self.resp = ""
        self.good = 0
        self.bits = {name: 0 for name, _, _, _ in BITMAPS}
        for _ in range(self.spec.initial):
            self._start()
            self.bits["happy"] |= 1
            self._count()

    def _start(self):
        for k in self.bits:
            self.bits[k] = (self.bits[k] << 1) & MASK
        self.last = 0.0
        self.resp = ""

    def _count(self):
        if self.bits["happy"] & 1:
            if self.rate < AVG_RATE:
                self.rate += 1.0
            self.avg += (self.last - self.avg) / self.rate
        window = (1 << self.spec.window) - 1
        self.good = bin(self.bits["happy"] & window).count("1")

    def record(self, xmit: bool, recv: bool, happy: bool, last: float, resp: str):
        self._start()
        self.bits["good_xmit" if xmit else "err_xmit"] |= 1
        if xmit:
            self.bits["good_recv" if recv else "err_recv"] |= 1
        if happy:
            self.bits["happy"] |= 1
        self.last = last if recv else 0.0
        self.resp = resp
        self._count()

    def update(self):
        """Apply the threshold; returns (went, message) like VBP_Update_Backend."""
        if self.good >= self.spec.threshold:
            msg = "Still healthy" if self.healthy else "Went healthy"
            went = not self.healthy
            self.healthy = True
        else:
            msg = "Went sick" if self.healthy else "Still sick"
            went = self.healthy
            self.healthy = False
        return went, msg

    def bit_string(self) -> str:
        return "".join(c if self.bits[n] & 1 else "-" for n, c, _, _ in BITMAPS)

    def log_line(self, name: str, msg: str) -> str:
        resp = self.resp.replace('"', "'")[:127]
        return (f"{name} {msg} {self.bit_string()} {self.good} {self.spec.threshold} "
                f"{self.spec.window} {self.last:.6f} {self.avg:.6f} \"{resp}\"")

    def details(self, json: bool) -> str:
        """backend.list -p (text) or -j -p (the inner lines of the JSON object)."""
        if json:
            lines = [f"\"bits_{c}\": {self.bits[n]}," for n, c, _, _ in BITMAPS]
            lines += [f"\"good\": {self.good},", f"\"threshold\": {self.spec.threshold},",
                      f"\"window\": {self.spec.window}"]
            return "\n".join(lines)
        out = [f"\nCurrent states  good: {self.good:2d} threshold: {self.spec.threshold:2d} "
               f"window: {self.spec.window:2d}",
               f"  Average response time of good probes: {self.avg:.6f}",
               "  Oldest " + "=" * 50 + " Newest"]
        for n, c, label, always in BITMAPS:
            if self.bits[n] or always:
                row = "".join(c if self.bits[n] >> (63 - i) & 1 else "-" for i in range(64))
                out.append(f"  {row} {label}")
        return "\n".join(out) + "\n"


class Prober:
    """Pokes one function every interval on its own thread, while its VCL is warm."""

    def __init__(self, name: str, invoker: Invoker, spec: ProbeSpec,
                 report: Callable[[bool, bool, str], None], observe=None, slot=None):
        self.name = name
        self.spec = spec.with_defaults()
        # The object's client and connections; the probe's timeout is given per call.
        self.invoker = invoker
        # slot.acquire(timeout) -> "ok" | "busy" | "gone", slot.release(): one of the object's
        # pool_size slots per poke (_director._ProbeReport); None: no limit (tests).
        self.slot = slot
        self.state = ProbeState(self.spec)
        self.report = report
        # observe(good, error or None, invocation record or None) after each poke: counters
        self.observe = observe
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.thread = None
        self._update()

    def _update(self):
        with self.lock:
            went, msg = self.state.update()
            line = self.state.log_line(self.name, msg)
            healthy = self.state.healthy
        self.report(healthy, went, line)

    def _invoke(self, request, t0: float):
        """One poke's invocation within the probe's timeout, in a slot of the object's pool."""
        timeout = self.spec.timeout
        if self.slot is not None:
            got = self.slot.acquire(timeout)
            if got != "ok":
                if got == "gone":
                    raise InvokeError("internal", "the object was discarded")
                raise InvokeError("busy", f"timed out after {timeout:g}s waiting for one of "
                                  "the invocations in flight (pool_size) to finish")
        try:
            left = max(timeout - (time.monotonic() - t0), 0.001)
            r = fetch.handle(self.invoker, request, timeout=left)
        finally:
            if self.slot is not None:
                self.slot.release()
        if time.monotonic() - t0 > timeout:
            # The boto3 transport reads with the object's timeout: a late answer is still a
            # failed poke, as in Varnish.
            raise InvokeError("timeout", f"timed out after {timeout:g}s waiting for the function",
                              record=r.record)
        return r

    def poke_once(self):
        request = self.spec.request_record()
        t0 = time.monotonic()
        xmit = recv = happy = False
        err = rec = None
        try:
            r = self._invoke(request, t0)
            rec = r.record
            xmit = recv = True
            happy = r.status == self.spec.exp_status
            resp = f"HTTP/1.1 {r.status} {r.reason or REASONS.get(r.status, '')}".rstrip()
        except InvokeError as e:
            err, rec = e, e.record
            xmit = e.kind not in ("transport", "credentials", "sts", "payload", "busy", "internal")
            recv = e.kind in ("function_error", "throttled", "service", "invalid_response")
            resp = str(e)
        except Exception as e:      # a probe never dies of a bad answer
            resp = f"{type(e).__name__}: {e}"
            err = InvokeError("internal", resp)
        if self.observe is not None:
            try:
                self.observe(happy, err, rec)
            except Exception:
                pass            # counters only (observe() logs its own failures): the poke still counts
        with self.lock:
            self.state.record(xmit, recv, happy, time.monotonic() - t0, resp)
        self._update()

    def _run(self, stop: threading.Event):
        try:
            from ._handoff import name_thread
            name_thread("vmod-lambda-prb")
        except ImportError:         # outside varnishd, unbuilt: a cosmetic loss only
            pass
        while not stop.is_set():
            self.poke_once()
            stop.wait(self.spec.interval)

    def start(self):
        """Start probing (VCL warm): from the initial state, at once."""
        self.stop(0)
        with self.lock:
            self.state.reset()
        self._update()
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(self.stop_event,),
                                       name="vmod-lambda-probe", daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 0.0):
        """Stop probing (VCL cold, discard). A poke under way finishes on its own: by default this
        does not wait for it (it runs on the CLI thread, and a poke of an unreachable endpoint
        lasts up to the probe's .timeout: waiting 0.5 s per object blocked vcl.discard of a VCL of
        many probed objects for seconds). The poke's result goes nowhere once the object is gone
        (_director.pyx, _ProbeReport)."""
        self.stop_event.set()
        t, self.thread = self.thread, None
        if t is not None and timeout:
            t.join(timeout)

    def list_text(self, details: bool, json: bool):
        with self.lock:
            if details:
                return self.state.details(json)
            return self.state.good, self.spec.window
