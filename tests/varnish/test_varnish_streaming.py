"""Streaming backends (streaming = true) in a real varnishd in front of the emulator: the head from
the HTTP-integration prelude, the body delivered as the function writes it, backpressure and flat
memory for 100 MiB, and mid-stream failures that cut the delivery and leave nothing in the cache.
Every test runs over both transports: "direct" (the default) and "boto3"."""

import http.client
import os
import re
import subprocess
import time

import pytest

from lambda_emulator import Emulator, FunctionConfig
from support import HANDLERS
from support.varnish_harness import Varnishd, require_stage
from vmod_lambda.config import TRANSPORTS



@pytest.fixture(scope="module", params=TRANSPORTS)
def transport(request):
    """The transport of every object of this module's VCL: the whole module runs over each."""
    return request.param


@pytest.fixture(scope="module")
def emulator():
    require_stage()
    emu = Emulator({"page": FunctionConfig("handlers_varnish:stream_page", timeout=300,
                                           reserved_concurrency=20)}, paths=[HANDLERS])
    emu.start()
    yield emu
    emu.stop()


def vcl(url, transport, extra_fetch=""):
    return f"""vcl 4.1;
import lambda;
import std;
backend be none;
sub vcl_init {{
    new page = lambda.backend("page", "us-east-1", "{url}", timeout = 120s,
                              event_format = "2.0", streaming = true,
                              transport = "{transport}");
}}
sub vcl_recv {{
    set req.backend_hint = page.backend();
    if (req.url ~ "pass=1") {{
        return (pass);
    }}
}}
sub vcl_backend_fetch {{
    {extra_fetch}
}}
sub vcl_backend_response {{
    if (bereq.url ~ "gzip=1") {{
        set beresp.do_gzip = true;
    }}
}}
sub vcl_deliver {{
    std.collect(resp.http.Set-Cookie, "|");
    set resp.http.X-Cookies = resp.http.Set-Cookie;
}}
"""


@pytest.fixture(scope="module")
def varnish(emulator, transport):
    with Varnishd(vcl(emulator.url, transport, """
    if (bereq.url ~ "fbt=1") { set bereq.first_byte_timeout = 1s; }
    if (bereq.url ~ "bbt=1") { set bereq.between_bytes_timeout = 1s; }
""")) as v:
        yield v
        assert not v.panicked()


def stat(v, name):
    out = subprocess.run(["varnishstat", "-n", v.workdir, "-1", "-f", name], capture_output=True,
                         text=True, timeout=30).stdout
    m = re.search(rf"^{re.escape(name)}\s+(\d+)", out, re.M)
    return int(m.group(1)) if m else 0


def wait_stat(v, name, want, timeout=10):
    """Worker threads add their counters to the shared ones from time to time: wait for it."""
    deadline = time.monotonic() + timeout
    while True:
        value = stat(v, name)
        if value >= want or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def raw_get(v, path, on_data=None, timeout=60, gate=None):
    """GET with http.client: (response, body, error) where error is the exception that cut the
    body short (IncompleteRead, ...), or None. gate: a path the handler waits for before it
    breaks the stream (see handlers_varnish._wait_gate), created once the head is here."""
    conn = http.client.HTTPConnection("127.0.0.1", v.port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
    finally:
        if gate:
            open_gate(gate)
    body, err = bytearray(), None
    try:
        while True:
            data = resp.read1(65536)
            if not data:
                break
            if on_data:
                on_data(data)
            else:
                body += data
    except (http.client.HTTPException, OSError) as e:
        err = e
    finally:
        conn.close()
    return resp, bytes(body), err


def open_gate(gate):
    with open(gate, "w"):
        pass


@pytest.fixture(scope="module")
def gates(tmp_path_factory):
    """gates(name): a fresh gate path (a directory with a plain name: it goes in a query string)."""
    base = tmp_path_factory.mktemp("gates")
    count = iter(range(1 << 30))
    return lambda name: f"{base}/{name}-{next(count)}"


def chunk(i, size=256):
    return bytes((i + j) % 256 for j in range(size))


def test_prelude_sets_status_headers_cookies_and_binary_body(varnish):
    resp, body, err = raw_get(varnish, "/h1?mode=http&status=201&n=3")
    assert err is None
    assert resp.status == 201
    assert resp.getheader("X-Streamed") == "yes"
    assert resp.getheader("Content-Type") == "application/octet-stream"
    assert resp.getheader("X-Cookies") == "a=1; Path=/|b=2; HttpOnly"
    assert body == chunk(0) + chunk(1) + chunk(2)


def test_a_plain_stream_is_the_body_of_a_200(varnish):
    resp, body, err = raw_get(varnish, "/p1?mode=plain&n=2&size=100")
    assert err is None and resp.status == 200
    assert resp.getheader("Content-Type") == "application/octet-stream"
    assert body == chunk(0, 100) + chunk(1, 100)


def test_the_body_reaches_the_client_before_the_function_ends(varnish):
    arrivals = []
    t0 = time.monotonic()
    resp, _, err = raw_get(varnish, "/t1?mode=http&n=3&delay=1.5&pass=1",
                           on_data=lambda d: arrivals.append((time.monotonic() - t0, len(d))))
    assert err is None and resp.status == 200
    assert sum(n for _, n in arrivals) == 3 * 256
    # The function sleeps 3 s after its first chunk: the first bytes came well before the last.
    assert arrivals[-1][0] - arrivals[0][0] >= 2.0, arrivals


def test_the_streamed_object_is_cached_when_complete(varnish, emulator):
    # (no Set-Cookie: the built-in VCL would not cache it)
    emulator.reset()
    for _ in range(3):
        resp, body, err = raw_get(varnish, "/c1?mode=http&n=2&cookies=0")
        assert err is None and resp.status == 200 and len(body) == 512
    assert emulator.stats()["invocations"]["page"] == 1


@pytest.mark.parametrize("path, reason, head", [
    ("/e1?mode=http&n=2&fail=1", "RuntimeError: failed after 2 chunks", chunk(0) + chunk(1)),
    ("/e2?mode=http&n=3&fault=corrupt_crc", "CRC mismatch", chunk(0)),
    ("/e3?mode=plain&n=3&fault=close", "", chunk(0)),
    ("/e4?mode=http&n=3&fault=stall&stall=4&bbt=1", "stalled", chunk(0)),
])
def test_a_broken_stream_cuts_the_delivery_and_is_not_cached(varnish, emulator, gates, path,
                                                             reason, head):
    """As with a native backend that breaks mid-body: a client already receiving the body sees it
    cut (no final chunk). The function breaks the stream once the client has the head (gate), so
    the delivery holds the busy object when the fetch fails: the cut is certain (see
    test_a_stream_that_breaks_during_vcl_deliver for a failure before that point)."""
    failed = stat(varnish, "MAIN.fetch_failed")
    emulator.reset()
    for attempt in (1, 2):
        gate = gates("e")
        resp, body, err = raw_get(varnish, f"{path}&gate={gate}", gate=gate)
        assert resp.status == 200 and err is not None, \
            "the client must see a truncated response, never a complete one"
        assert body == head, "what came before the failure is delivered as it was"
        assert wait_stat(varnish, "MAIN.fetch_failed", failed + attempt) == failed + attempt
    assert emulator.stats()["invocations"]["page"] == 2, "a failed stream must not be cached"
    log = varnishlog(varnish, path.split("?")[0])
    assert "FetchError" in log and "lambda: page:" in log and reason in log


@pytest.mark.parametrize("guard", [False, True], ids=["as_varnish_does", "lambda_guard"])
def test_a_stream_that_breaks_during_vcl_deliver(emulator, transport, guard):
    """Varnish's own window, the same for native backends (varnish-cache #3560, 7.1 to 7.7 at
    least): the client leaves VBF_Fetch() once the fetch streams (without the busy object) and
    takes the busy object again only in cnt_transmit. A fetch that fails and ends in between
    leaves it a failed object with no busy object: cnt_transmit then delivers the part that was
    stored as if complete, final chunk included (Content-Length is kept since #3561, but a stream
    has none), and closes the connection. vcl_deliver sleeps 2 s here and the stream breaks 0.5 s
    after its head, to hold the client in that window (a client still before vcl_deliver gets a
    503: both outcomes are checked). Without the guard, what the VMOD guarantees holds either
    way: the whole body is never delivered, the object is not cached, the failure is counted and
    logged. With lambda_guard in resp.filters, the client never sees a complete response: a 503,
    a cut body, or (nothing was stored) the connection closed without a response."""
    full = chunk(0) + chunk(1) + chunk(2)
    deliver = "vtc.sleep(2s);"
    if guard:
        deliver += '\n    set resp.filters = "lambda_guard " + resp.filters;'
    with Varnishd(vcl(emulator.url, transport).replace("import std;", "import std;\nimport vtc;").replace(
            "sub vcl_deliver {", "sub vcl_deliver {\n    " + deliver)) as v:
        emulator.reset()
        outcomes = []
        paths = ["/w1?mode=http&n=3&delay=0.5&fault=corrupt_crc"] * 2 \
            + ["/w0?mode=http&n=2&size=0&delay=0.5&fault=corrupt_crc"] * 2 \
            + ["/w1?mode=plain&n=3&delay=0.5&fault=close&pass=1",
               "/w0?mode=http&n=2&size=0&delay=0.5&fault=close&pass=1"]
        for attempt, path in enumerate(paths, 1):
            try:
                resp, body, err = raw_get(v, path)
            except (http.client.HTTPException, OSError) as e:
                outcomes.append((path[:3], type(e).__name__))
                assert guard and path.startswith("/w0"), outcomes
                resp = None
            if resp is not None:
                outcomes.append((path[:3], resp.status, len(body), type(err).__name__ if err else None))
                assert resp.status in (200, 503), outcomes
                if resp.status == 200:
                    assert len(body) < len(full) and full.startswith(body), outcomes
                    if guard:
                        assert err is not None, outcomes
            assert wait_stat(v, "MAIN.fetch_failed", attempt) == attempt
        print("outcomes:", outcomes)
        assert emulator.stats()["invocations"]["page"] == 6, "a failed stream must not be cached"
        assert "CRC mismatch" in varnishlog(v, "/w1")
        # A complete stream goes through the guard untouched, from the fetch and from the cache.
        for _ in range(2):
            resp, body, err = raw_get(v, "/w2?mode=http&n=3&cookies=0")
            assert err is None and resp.status == 200 and body == full
        assert not v.panicked()


def varnishlog(v, url):
    r = subprocess.run(["varnishlog", "-n", v.workdir, "-d", "-b", "-q", f'BereqURL ~ "^{url}"',
                        "-i", "FetchError"], capture_output=True, text=True, timeout=30)
    return r.stdout


def test_no_first_byte_in_time_is_a_503(varnish):
    resp, body, err = raw_get(varnish, "/f1?mode=http&first=3&fbt=1")
    assert resp.status == 503
    assert "waiting for the first byte" in varnishlog(varnish, "/f1")


def test_100_mib_stream_with_bounded_child_memory(varnish):
    """The VMOD holds one window (256 KiB) and one event stream message per fetch, whatever the
    size. (Varnish itself keeps in Transient storage what a pass client has not read yet: the
    function writes at most ~64 MB/s here so that a reader on a loaded machine keeps up, and the
    child's growth measures the VMOD, not how far the client fell behind.)"""
    child = child_pid(varnish)
    before = vm(child, "VmRSS")
    hwm_before = vm(child, "VmHWM")
    expected_i = [0]
    buf = bytearray()

    def check(data):
        buf.extend(data)
        while len(buf) >= 65536:
            assert bytes(buf[:65536]) == (b"%08d" % expected_i[0]) * 8192
            del buf[:65536]
            expected_i[0] += 1

    t0 = time.monotonic()
    resp, _, err = raw_get(varnish, "/big?mode=big&mb=100&pause=0.001&pass=1", on_data=check, timeout=300)
    elapsed = time.monotonic() - t0
    assert err is None and resp.status == 200
    assert expected_i[0] == 1600 and not buf
    growth = (vm(child, "VmHWM") - hwm_before) / 1024
    print(f"100 MiB in {elapsed:.1f}s; child VmRSS before {before // 1024} MiB, "
          f"VmHWM growth {growth:.1f} MiB")
    assert growth < 40, f"child peak RSS grew by {growth:.0f} MiB for a 100 MiB stream"


def child_pid(v):
    out = subprocess.run(["pgrep", "-P", str(v.proc.pid)], capture_output=True, text=True).stdout
    pids = [int(p) for p in out.split()]
    assert pids, "no varnishd child"
    return pids[0]


def vm(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field}")


def test_a_pass_client_that_leaves_releases_the_worker_and_the_function(varnish, emulator):
    """Varnish abandons a pass fetch whose client went away; the VMOD's worker then stops reading
    and drops the connection, which ends the function (nothing keeps streaming into the void)."""
    conn = http.client.HTTPConnection("127.0.0.1", varnish.port, timeout=60)
    conn.request("GET", "/gone?mode=big&mb=150&pause=0.01&pass=1")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.read1(65536)
    conn.close()
    assert emulator.wait_idle(60), "the function kept streaming after the client left"
    resp, body, err = raw_get(varnish, "/after?mode=plain&n=2&size=10")
    assert err is None and body == chunk(0, 10) + chunk(1, 10)


def lambda_counters(v):
    out = subprocess.run(["varnishstat", "-n", v.workdir, "-1", "-f", "lambda.*"],
                         capture_output=True, text=True, timeout=30).stdout
    return {line.split()[0]: int(line.split()[1]) for line in out.splitlines() if line.strip()}


def test_streamed_fetches_are_counted_and_logged(emulator, transport):
    """Own varnishd (fresh counters): a complete stream and a failed one, with log_tail."""
    with Varnishd(vcl(emulator.url, transport).replace("streaming = true", "streaming = true, "
                                                                 "log_tail = true")) as v:
        resp, body, err = raw_get(v, "/k1?mode=http&n=4&size=1000&pass=1")
        assert err is None and len(body) == 4000
        raw_get(v, "/k2?mode=http&n=2&fail=1&pass=1")
        time.sleep(0.5)
        c = lambda_counters(v)
        assert c["lambda.page.fetch"] == 2 and c["lambda.page.req"] == 2
        assert c["lambda.page.function_error"] == 1 and c["lambda.page.fail"] == 1
        # the failed stream's body is not response bytes (as for a failed buffered fetch)
        assert c["lambda.page.beresp_bodybytes"] == 4000
        assert c["lambda.page.payload_in"] >= 4000 + 512
        assert c["lambda.page.inflight"] == 0 and c["lambda.page.queued"] == 0
        log = subprocess.run(["varnishlog", "-n", v.workdir, "-d", "-b", "-i", "VCL_Log"],
                             capture_output=True, text=True, timeout=30).stdout
        assert "lambda: page: fetch ok function=page" in log, log
        assert "lambda: page: fetch function_error function=page" in log
        assert "lambda: page: log: REPORT RequestId:" in log
        assert not v.panicked()


def test_concurrent_streams_of_every_kind_leave_nothing_behind(emulator, transport, gates):
    """Many streams at once through a small pool (pool_size 3): complete ones, failing ones, cut
    ones, stalled ones and clients that leave. Afterwards: no panic, no job in flight, the child's
    descriptors back where they were, and a normal stream still works. The broken ones break once
    their client has the head (gate): a 200 is then always cut short."""
    import random
    import threading
    with Varnishd(vcl(emulator.url, transport, """
    if (bereq.url ~ "bbt=1") { set bereq.between_bytes_timeout = 1s; }
""").replace("streaming = true", "streaming = true, pool_size = 3")) as v:
        child = child_pid(v)
        assert raw_get(v, "/warm?mode=plain&n=1&size=10&pass=1")[2] is None
        fds_before = len(os.listdir(f"/proc/{child}/fd"))
        kinds = ["mode=http&n=5&delay=0.05", "mode=http&n=2&fail=1", "mode=http&n=3&fault=corrupt_crc",
                 "mode=plain&n=3&fault=close", "mode=http&n=3&fault=stall&stall=2&bbt=1",
                 "mode=big&mb=4", "leave"]
        rng = random.Random(11)
        problems = []

        def one(i):
            kind = rng.choice(kinds)
            try:
                if kind == "leave":
                    conn = http.client.HTTPConnection("127.0.0.1", v.port, timeout=60)
                    conn.request("GET", f"/leave{i}?mode=big&mb=20&pause=0.005&pass=1")
                    conn.getresponse().read1(1000)
                    conn.close()
                    return
                gate = gates("s") if "fail=1" in kind or "fault=" in kind else None
                resp, body, err = raw_get(v, f"/s{i}?{kind}&pass=1"
                                          + (f"&gate={gate}" if gate else ""), gate=gate)
                if kind.startswith("mode=http&n=5"):
                    if err is not None and resp.status != 503:
                        problems.append((kind, resp.status, err))
                elif kind == "mode=big&mb=4":
                    if resp.status == 200 and err is None and len(body) != 4 << 20:
                        problems.append((kind, len(body)))
                elif resp.status == 200 and err is None:
                    problems.append((kind, "complete response from a broken stream"))
            except Exception as e:          # noqa: BLE001 - reported below
                problems.append((kind, repr(e)))

        for _ in range(3):
            threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
        assert not problems, problems
        assert emulator.wait_idle(60)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            c = lambda_counters(v)
            if c["lambda.page.inflight"] == 0 and c["lambda.page.queued"] == 0:
                break
            time.sleep(0.2)
        assert c["lambda.page.inflight"] == 0 and c["lambda.page.queued"] == 0, c
        resp, body, err = raw_get(v, "/after?mode=plain&n=2&size=10&pass=1")
        assert err is None and body == chunk(0, 10) + chunk(1, 10)
        time.sleep(1)
        fds_after = len(os.listdir(f"/proc/{child}/fd"))
        assert fds_after <= fds_before + 3, (fds_before, fds_after)
        assert not v.panicked()


def test_varnish_can_gzip_a_streamed_body(varnish):
    import gzip
    conn = http.client.HTTPConnection("127.0.0.1", varnish.port, timeout=60)
    conn.request("GET", "/z1?mode=http&n=40&size=1000&gzip=1&cookies=0",
                 headers={"Accept-Encoding": "gzip"})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    assert resp.status == 200 and resp.getheader("Content-Encoding") == "gzip"
    assert gzip.decompress(data) == b"".join(chunk(i, 1000) for i in range(40))


def test_a_204_prelude_has_no_body_and_frees_the_worker(varnish, emulator):
    resp, body, err = raw_get(varnish, "/n204?mode=http&status=204&n=2&cookies=0")
    assert resp.status == 204 and body == b"" and err is None
    assert emulator.wait_idle(30)
