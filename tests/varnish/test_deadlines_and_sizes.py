"""Deadlines and the size of an answer, through a real varnishd, on both transports (issue 22 points 5
and 11, issue 20's remainder).

- An Invoke answer beyond Lambda's 6 MB (a 1 GB Content-Length, an endless chunked body, a body that
  runs to the end of the connection) fails its call quickly, cleanly (a 503 for a fetch, the
  fallback for invoke()), counted in too_large, its connection closed, and the child's memory does
  not follow the endpoint.
- A trickling answer does not hold a worker of the boto3 transport past the call's deadline.
- (bereq.first_byte_timeout and a buffered fetch: vtc/lambda_r22_00005.vtc.)
- A streamed fetch is counted once, by the fetch, as its client saw it (the complete stream, a
  stall beyond between_bytes_timeout, no head within first_byte_timeout).

The hostile endpoint is a small server of this file's own (the answer's framing is the point),
listening on loopback; streams come from the emulator.
"""

import os
import re
import socket
import subprocess
import threading
import time

import pytest

from lambda_emulator import Emulator, FunctionConfig
import support
from support.listeners import stop_listening
from support.observe import counters, timed, vsl, wait_for
from support.varnish_harness import Varnishd, require_stage
from vmod_lambda.config import TRANSPORTS
from vmod_lambda.limits import MAX_RESPONSE_BODY

TIMEOUT = 1.0
MARGIN = 0.1            # the caller's documented slack (vmod_lambda.vcc, *timeout*)
SLACK = 1.5             # the test harness's own (a loaded, shared 2-core machine)
OK = b'{"statusCode": 200, "body": "ok"}'
BIG = ("huge_cl", "chunked", "eof")
BLOCK = b"x" * 65536


class Hostile:
    """An Invoke API endpoint that answers each invocation as its function name says, and notes
    when each connection ended from its side (a send failed: the client closed it) and how many
    body bytes it had sent by then."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.ended = {}             # function name -> [(seconds from the request, bytes sent)]
        self.lock = threading.Lock()
        self.stopping = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        conn.settimeout(30)
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head).group(1))
                while len(buf) < length:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                buf = buf[length:]
                name = head.split(b" ")[1].split(b"/")[3].decode()
                if not self._answer(conn, name):
                    return
        except OSError:
            pass
        finally:
            conn.close()

    def _end(self, name, t0, sent):
        with self.lock:
            self.ended.setdefault(name, []).append((time.monotonic() - t0, sent))

    def _answer(self, conn, name) -> bool:
        """Answer one invocation; False: the connection is done."""
        t0 = time.monotonic()
        mode = name.split("-")[0]
        sent = 0
        try:
            if mode == "ok":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(OK), OK))
                return True
            if mode == "atcap":
                # exactly the most that is read (as Content-Length, or chunked when "chunked"
                # is in the name), then the end
                body = b"y" * MAX_RESPONSE_BODY
                if "chunked" in name:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
                else:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                                 % (len(body), body))
                return True
            if mode == "overcap":
                # one byte more than is read, chunked, then the end
                body = b"y" * (MAX_RESPONSE_BODY + 1)
                conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
                return True
            if mode == "hang":
                time.sleep(5)
                return False
            if mode == "trickle":
                # the head at once, then a valid body one byte every 50 ms (about 12 s)
                body = OK + b" " * 200
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
                             b"x-amzn-RequestId: trickle\r\n\r\n" % len(body))
                for i in range(len(body)):
                    conn.sendall(body[i:i + 1])
                    sent += 1
                    time.sleep(0.05)
                return False
            if mode == "huge_cl":
                head = (b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n"
                        b"x-amzn-RequestId: huge-cl\r\n\r\n")
            elif mode == "chunked":
                head = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                        b"x-amzn-RequestId: chunked\r\n\r\n")
            else:
                head = b"HTTP/1.1 200 OK\r\nConnection: close\r\nx-amzn-RequestId: eof\r\n\r\n"
            conn.sendall(head)
            block = b"%x\r\n%s\r\n" % (len(BLOCK), BLOCK) if mode == "chunked" else BLOCK
            end = time.monotonic() + 20
            while sent < (1 << 30) and time.monotonic() < end:
                conn.sendall(block)
                sent += len(BLOCK)
            return False
        except OSError:
            return False
        finally:
            if mode != "ok":
                self._end(name, t0, sent)

    def stop(self):
        self.stopping = True
        stop_listening(self.sock, self.thread)     # never close() under the accept()


def _vcl(hostile_url, emu_url):
    objs, recv = [], []
    for t in TRANSPORTS:
        for mode in BIG + ("trickle",):
            for p in ("f", "i"):
                objs.append(f'    new {p}_{mode}_{t} = lambda.backend("{mode}-{p}-{t}", "us-east-1", '
                            f'"{hostile_url}", timeout = {TIMEOUT:g}s, transport = "{t}");')
            recv.append(f'    if (req.url ~ "^/f/{mode}/{t}/") {{ set req.backend_hint = '
                        f'f_{mode}_{t}.backend(); return (pass); }}')
            recv.append(f'    if (req.url ~ "^/i/{mode}/{t}/") {{ set req.http.x-r = '
                        f'i_{mode}_{t}.invoke("{{}}", fallback = "FALLBACK"); return (synth(200)); }}')
        objs.append(f'    new s_{t} = lambda.backend("page", "us-east-1", "{emu_url}", timeout = 20s, '
                    f'event_format = "2.0", streaming = true, transport = "{t}");')
        recv.append(f'    if (req.url ~ "^/s/{t}/") {{ set req.backend_hint = s_{t}.backend(); '
                    f'return (pass); }}')
    return "\n".join([
        "vcl 4.1;", "import lambda;", "backend be none;", "sub vcl_init {", *objs, "}",
        "sub vcl_recv {", *recv, "    return (synth(404));", "}",
        "sub vcl_backend_fetch {",
        '    if (bereq.url ~ "fbt=1") { set bereq.first_byte_timeout = 1s; }',
        '    if (bereq.url ~ "bbt=1") { set bereq.between_bytes_timeout = 1s; }',
        "}",
        "sub vcl_synth { set resp.http.x-r = req.http.x-r; }",
        'sub vcl_backend_error { set beresp.http.x-fetch-failed = "1"; }', ""])


@pytest.fixture(scope="module")
def env():
    require_stage()
    hostile = Hostile()
    emu = Emulator({"page": FunctionConfig("handlers_varnish:stream_page", timeout=300,
                                           reserved_concurrency=20)}, paths=[support.HANDLERS])
    emu.start()
    try:
        with Varnishd(_vcl(hostile.url, emu.url)) as v:
            yield v, hostile
            assert not v.panicked()
    finally:
        emu.stop()
        hostile.stop()


def child_pid(v):
    out = subprocess.run(["pgrep", "-P", str(v.proc.pid)], capture_output=True, text=True).stdout
    pids = [int(p) for p in out.split()]
    assert pids, "no varnishd child"
    return pids[0]


def vm_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field}")


# ------------------------------------------------------------------------- answers beyond 6 MB

@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mode", BIG)
def test_an_answer_beyond_6mb_fails_the_fetch_quickly_in_bounded_memory(env, mode, transport):
    v, hostile = env
    child = child_pid(v)
    rss0, hwm0 = vm_kb(child, "VmRSS"), vm_kb(child, "VmHWM")
    url = f"/f/{mode}/{transport}/1"
    status, headers, body, elapsed = timed(v, url)
    assert status == 503 and headers.get("x-fetch-failed") == "1", (status, body[:200])
    assert elapsed < TIMEOUT + MARGIN + SLACK, elapsed
    errors = vsl(v, url, "FetchError")
    assert errors and errors[0].startswith(f"lambda: f_{mode}_{transport}: the answer exceeds "
                                           "the 6 MB limit of synchronous invocations ("), errors
    assert "refused, connection closed" in errors[0], errors
    if mode == "huge_cl":
        assert "(Content-Length 1073741824;" in errors[0], errors
    records = [r for r in vsl(v, url, "VCL_Log") if r.startswith(f"lambda: f_{mode}_")]
    assert records and records[0].startswith(
        f"lambda: f_{mode}_{transport}: fetch too_large function={mode}-f-{transport} "), records
    c = counters(v, f"f_{mode}_{transport}")
    assert (c["req"], c["fetch"], c["fail"], c["too_large"]) == (1, 1, 1, 1), c
    assert c["timeout"] == 0 and c["conn_fail"] == 0 and c["invalid"] == 0, c
    assert c["beresp_bodybytes"] == 0 and c["inflight"] == 0, c
    # the connection was closed: the endpoint's sending stopped, well short of what it had
    assert wait_for(lambda: f"{mode}-f-{transport}" in hostile.ended, 10), hostile.ended
    t_end, sent = hostile.ended[f"{mode}-f-{transport}"][0]
    assert sent < 64 * MAX_RESPONSE_BODY, (t_end, sent)
    assert t_end < TIMEOUT + MARGIN + SLACK, (t_end, sent)
    growth = (vm_kb(child, "VmHWM") - hwm0) / 1024
    print(f"{mode}/{transport}: {elapsed:.3f}s, child VmRSS {rss0 // 1024} MiB, "
          f"VmHWM growth {growth:.1f} MiB, endpoint sent {sent >> 20} MiB")
    assert growth < 40, f"the child's peak RSS grew by {growth:.0f} MiB"


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mode", BIG)
def test_an_answer_beyond_6mb_gives_invoke_its_fallback(env, mode, transport):
    v, hostile = env
    child = child_pid(v)
    hwm0 = vm_kb(child, "VmHWM")
    url = f"/i/{mode}/{transport}/1"
    status, headers, body, elapsed = timed(v, url)
    assert status == 200 and headers.get("x-r") == "FALLBACK", (status, headers)
    assert elapsed < TIMEOUT + MARGIN + SLACK, elapsed
    errors = vsl(v, url, "VCL_Error")
    assert errors and errors[0].startswith(
        f"lambda: i_{mode}_{transport}: invoke: the answer exceeds the 6 MB limit"), errors
    records = [r for r in vsl(v, url, "VCL_Log") if r.startswith(f"lambda: i_{mode}_")]
    assert records and records[0].startswith(
        f"lambda: i_{mode}_{transport}: invoke too_large "), records
    c = counters(v, f"i_{mode}_{transport}")
    assert (c["req"], c["invoke"], c["fail"], c["too_large"]) == (1, 1, 1, 1), c
    assert (vm_kb(child, "VmHWM") - hwm0) / 1024 < 40


# ------------------------------------------------------------------ a trickle and the deadline

@pytest.mark.parametrize("kind", ("f", "i"))
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_trickling_answer_does_not_hold_the_worker_past_the_deadline(env, transport, kind):
    """The head at once, then one byte every 50 ms: the caller gives up at timeout + 100 ms and the
    worker (boto3's too: its read timeout is per read) stops reading there and closes the
    connection, instead of reading the trickle to its end 12 s later."""
    v, hostile = env
    name = f"trickle-{kind}-{transport}"
    url = f"/{kind}/trickle/{transport}/1"
    status, headers, body, elapsed = timed(v, url)
    if kind == "f":
        assert status == 503 and headers.get("x-fetch-failed") == "1", status
    else:
        assert status == 200 and headers.get("x-r") == "FALLBACK", (status, headers)
    assert elapsed < TIMEOUT + MARGIN + SLACK, elapsed
    # the endpoint notices the closed connection at its next byte (50 ms)
    assert wait_for(lambda: name in hostile.ended, 15), hostile.ended
    t_end, sent = hostile.ended[name][0]
    assert t_end < TIMEOUT + MARGIN + SLACK, (t_end, sent)
    c = counters(v, f"{kind}_trickle_{transport}")
    assert (c["req"], c["fail"], c["timeout"], c["payload_in"], c["beresp_bodybytes"]) == \
        (1, 1, 1, 0, 0), c
    assert wait_for(lambda: counters(v, f"{kind}_trickle_{transport}")["inflight"] == 0, 5)


# ---------------------------------------------------------------- streamed fetches, counted once

@pytest.mark.parametrize("transport", TRANSPORTS)
def test_streamed_fetches_are_counted_once_by_the_fetch_as_the_client_saw_them(env, transport):
    v, hostile = env
    obj = f"s_{transport}"
    # 1. a complete stream: ok, its bytes
    status, headers, body, _ = timed(v, f"/s/{transport}/1?mode=http&n=4&size=1000&cookies=0")
    assert status == 200 and len(body) == 4000
    assert wait_for(lambda: counters(v, obj)["req"] == 1, 5), counters(v, obj)
    c = counters(v, obj)
    assert (c["req"], c["fetch"], c["fail"]) == (1, 1, 0), c
    assert c["beresp_bodybytes"] == 4000 and c["beresp_hdrbytes"] > 0, c
    records = vsl(v, f"/s/{transport}/1?mode=http&n=4&size=1000&cookies=0", "VCL_Log")
    assert [r for r in records if r.startswith(f"lambda: {obj}: fetch ok function=page ")], records

    # 2. no head within first_byte_timeout (1 s; the object's timeout is 20 s): a timeout
    url = f"/s/{transport}/2?mode=http&first=3&fbt=1"
    status, headers, body, elapsed = timed(v, url)
    assert status == 503 and headers.get("x-fetch-failed") == "1", status
    assert elapsed < 1 + MARGIN + SLACK, elapsed
    errors = vsl(v, url, "FetchError")
    assert errors and re.match(rf"lambda: {obj}: timed out after 1\.[0-9]{{3}}s "
                               r"\(first_byte_timeout 1s\) waiting for the first byte", errors[0]), \
        errors
    assert wait_for(lambda: counters(v, obj)["req"] == 2, 5), counters(v, obj)
    c = counters(v, obj)
    assert (c["req"], c["fetch"], c["fail"], c["timeout"]) == (2, 2, 1, 1), c
    assert c["beresp_bodybytes"] == 4000, c
    records = [r for r in vsl(v, url, "VCL_Log") if r.startswith(f"lambda: {obj}: fetch ")]
    assert len(records) == 1 and records[0].startswith(f"lambda: {obj}: fetch timeout "), records

    # 3. a stall beyond between_bytes_timeout (1 s) after the head: a timeout, no response bytes
    url = f"/s/{transport}/3?mode=http&n=3&fault=stall&stall=3&bbt=1&cookies=0"
    status, headers, body, elapsed = _get_cut(v, url)
    assert elapsed < 1 + 1 + SLACK, elapsed
    assert wait_for(lambda: counters(v, obj)["req"] == 3, 5), counters(v, obj)
    c = counters(v, obj)
    assert (c["req"], c["fetch"], c["fail"], c["timeout"]) == (3, 3, 2, 2), c
    assert c["beresp_bodybytes"] == 4000, c
    records = [r for r in vsl(v, url, "VCL_Log") if r.startswith(f"lambda: {obj}: fetch ")]
    assert len(records) == 1 and records[0].startswith(f"lambda: {obj}: fetch timeout "), records
    assert wait_for(lambda: counters(v, obj)["inflight"] == 0, 10), counters(v, obj)


def _get_cut(v, url):
    """GET whose body may be cut short: (status, headers, body so far, seconds)."""
    import http.client
    t0 = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", v.port, timeout=30)
    try:
        conn.request("GET", url)
        resp = conn.getresponse()
        body = b""
        try:
            body = resp.read()
        except (http.client.HTTPException, OSError):
            pass
        return resp.status, dict(resp.getheaders()), body, time.monotonic() - t0
    finally:
        conn.close()


# ------------------------------------------------------------------------- the transports alone

@pytest.fixture(scope="module")
def hostile():
    h = Hostile()
    yield h
    h.stop()


@pytest.fixture(params=TRANSPORTS)
def transport(request):
    from vmod_lambda.config import validate_backend
    from vmod_lambda.invoker import Invoker
    env = {"AWS_ACCESS_KEY_ID": "AKIDVMODLAMBDATEST", "AWS_SECRET_ACCESS_KEY": "test-secret",
           "AWS_EC2_METADATA_DISABLED": "true"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    made = []

    def make(url, timeout=10):
        inv = Invoker(validate_backend("t", "f", "us-east-1", endpoint_url=url,
                                       timeout=timeout, transport=request.param))
        made.append(inv.transport)
        return inv.transport

    yield make
    for t in made:
        t.close()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _invoke(t, name, deadline=None):
    from vmod_lambda.invoker import InvocationRecord
    from vmod_lambda.transport.base import InvokeRequest
    return t.invoke(InvokeRequest(name, b"{}", deadline=deadline),
                    InvocationRecord("RequestResponse", None, 2))


@pytest.mark.parametrize("mode", BIG + ("overcap",))
def test_the_transport_refuses_an_answer_beyond_the_cap(hostile, transport, mode):
    from vmod_lambda.transport.base import InvokeError
    t = transport(hostile.url)
    name = f"{mode}-t-{id(t)}"
    with pytest.raises(InvokeError) as e:
        _invoke(t, name)
    assert e.value.kind == "too_large", e.value
    assert str(e.value).startswith("the answer exceeds the 6 MB limit of synchronous "
                                   "invocations ("), e.value
    if mode != "overcap":
        assert wait_for(lambda: name in hostile.ended, 10)
        assert hostile.ended[name][0][1] < 64 * MAX_RESPONSE_BODY
    # the next call gets a connection of its own, and an answer at the cap is whole
    for atcap in ("atcap-plain", "atcap-chunked"):
        res = _invoke(t, atcap)
        assert len(res.payload) == MAX_RESPONSE_BODY


def test_the_transport_stops_reading_a_trickle_at_the_deadline(hostile, transport):
    """boto3's read timeout (10 s here) is per read: the deadline bounds the whole body."""
    from vmod_lambda.transport.base import InvokeError
    t = transport(hostile.url)
    name = f"trickle-t-{id(t)}"
    t0 = time.monotonic()
    with pytest.raises(InvokeError) as e:
        _invoke(t, name, deadline=t0 + 1.0)
    elapsed = time.monotonic() - t0
    assert e.value.kind == "timeout", e.value
    assert elapsed < 1.0 + SLACK, elapsed
    assert wait_for(lambda: name in hostile.ended, 10)
    assert hostile.ended[name][0][0] < 1.0 + SLACK, hostile.ended[name]


def test_the_direct_transport_stops_waiting_for_a_streams_head_at_the_deadline(hostile):
    from vmod_lambda.config import validate_backend
    from vmod_lambda.invoker import Invoker
    from vmod_lambda.transport.base import InvokeError
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    inv = Invoker(validate_backend("t", "hang-stream", "us-east-1", endpoint_url=hostile.url,
                                   timeout=10, transport="direct"))
    try:
        t0 = time.monotonic()
        with pytest.raises(InvokeError) as e:
            inv.invoke_stream(b"{}", deadline=t0 + 0.5)
        assert e.value.kind == "timeout", e.value
        assert time.monotonic() - t0 < 0.5 + SLACK
    finally:
        inv.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_stream_whose_pass_client_left_is_abandoned_not_failed(env, transport):
    """Varnish stops reading a pass fetch whose client left: the fetch lets go of the stream, its
    record says so, and it is no failure (nothing went wrong with the call)."""
    import http.client
    v, hostile = env
    obj = f"s_{transport}"
    before = counters(v, obj)
    url = f"/s/{transport}/left?mode=big&mb=100&pause=0.01"
    conn = http.client.HTTPConnection("127.0.0.1", v.port, timeout=30)
    conn.request("GET", url)
    resp = conn.getresponse()
    assert resp.status == 200 and resp.read1(65536)
    conn.close()
    assert wait_for(lambda: counters(v, obj)["req"] == before["req"] + 1, 20), counters(v, obj)
    records = [r for r in vsl(v, url, "VCL_Log") if r.startswith(f"lambda: {obj}: fetch ")]
    assert len(records) == 1, records
    print(records)
    c = counters(v, obj)
    assert c["fail"] == before["fail"], c
    assert records[0].startswith(f"lambda: {obj}: fetch abandoned function=page "), records
    assert wait_for(lambda: counters(v, obj)["inflight"] == 0, 20), counters(v, obj)
