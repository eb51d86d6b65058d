"""The multiplexed worker pool (_handoff.pyx, _Worker), through a real varnishd.

With the direct transport to an http:// endpoint, a worker thread runs up to 32 invocations at once:
their Python parts back to back with the GIL, their socket exchanges without it, one poll() for
all. Checked here: answers never cross between the jobs of a worker; one invocation that hangs does
not hold up the others sharing its worker, and times out on its own; the load gathers on few
worker threads (the point of it: fewer wake-ups and GIL hand-offs per invocation); objects that are
not multiplexed (boto3 transport) still get served while multiplexed jobs keep the workers busy;
stale keep-alive connections are replaced inside a worker's batch; https:// endpoints (TLS in C
with OpenSSL, inside the same exchanges the worker polls) are multiplexed as well.
"""

import json
import os
import random
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from support.fake_lambda import Action, FakeLambda, event_path
from support.varnish_harness import Varnishd, require_stage


def answer(path: str) -> bytes:
    return json.dumps({"statusCode": 200, "headers": {"content-type": "text/plain"},
                       "body": f"answer for {path}"}).encode()


def route(name, event):
    path = event_path(event)
    if path.startswith("/hang/"):
        return Action("hang", delay=10.0)
    if path.startswith("/close/"):
        # Answer with Connection: close, then close: the connection must not be used again.
        return Action("raw", b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n"
                      b"\r\n%s" % (len(answer(path)), answer(path)))
    if path.startswith("/jitter/"):
        time.sleep(random.Random(path).uniform(0.0, 0.05))
    elif path.startswith("/slow/"):
        time.sleep(0.2)
    return Action("payload", answer(path))


def vcl(url):
    return f"""vcl 4.1;
import lambda;
backend be none;
sub vcl_init {{
    new fn = lambda.backend("mux", "us-east-1", "{url}", timeout = 1s, pool_size = 256);
    new b3 = lambda.backend("mux", "us-east-1", "{url}", timeout = 5s, pool_size = 8,
                            transport = "boto3");
    new patient = lambda.backend("mux", "us-east-1", "{url}", timeout = 3s, pool_size = 4);
}}
sub vcl_recv {{
    if (req.url ~ "^/boto3/") {{
        set req.backend_hint = b3.backend();
    }} elsif (req.url ~ "^/hang/") {{
        set req.backend_hint = patient.backend();
    }} else {{
        set req.backend_hint = fn.backend();
    }}
    return (pass);
}}
"""


def child_pid(v):
    out = subprocess.run(["pgrep", "-P", str(v.proc.pid)], capture_output=True, text=True).stdout
    return int(out.split()[0])


def worker_wakeups(pid):
    """Voluntary context switches so far of each vmod-lambda worker thread of the child: a worker
    that took a job woke up for it."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().strip() != "vmod-lambda":
                    continue
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        out[tid] = int(line.split()[1])
        except OSError:
            pass
    return out


def fire_counting_wakeups(v, paths, workers):
    """fire(), and the worker threads that woke up meanwhile."""
    pid = child_pid(v)
    before = worker_wakeups(pid)
    results = fire(v, paths, workers=workers)
    after = worker_wakeups(pid)
    return results, [tid for tid, n in after.items() if n > before.get(tid, 0)], len(after)


def assert_answers(paths, results):
    """Every fetch got its own function's answer."""
    for path, (status, _headers, body) in zip(paths, results, strict=True):
        assert status == 200, (path, status, body[:200])
        assert body == f"answer for {path}".encode()


def fire(v, paths, workers=64):
    with ThreadPoolExecutor(workers) as ex:
        return list(ex.map(v.request, paths))


def setup_module():
    require_stage()


def test_answers_never_cross():
    """Many invocations in flight in few workers, answered in any order: each fetch gets its own."""
    paths = [f"/jitter/{i}" for i in range(300)]
    with FakeLambda(route) as fake, Varnishd(vcl(fake.url)) as v:
        results = fire(v, paths)
        assert not v.panicked()
    assert_answers(paths, results)


def test_a_hanging_invocation_does_not_hold_up_its_worker():
    """One invocation hangs (10 s; its object's timeout is 3 s) while others come and go through
    the same workers: they are all answered while it still waits, and it fails on its own
    timeout."""
    with FakeLambda(route) as fake, Varnishd(vcl(fake.url)) as v:
        v.request("/warm/1")
        slow = {}
        t = threading.Thread(target=lambda: slow.update(r=v.request("/hang/1")))
        t.start()
        time.sleep(0.3)             # the hanging invocation is in flight
        results = fire(v, [f"/fast/{i}" for i in range(100)], workers=16)
        hang_done_before = not t.is_alive()
        t.join(30)
        assert not v.panicked()
    assert [r[0] for r in results] == [200] * 100
    assert not hang_done_before, "the fast fetches waited for the hanging one"
    assert slow["r"][0] == 503        # its own timeout: a failed fetch


def test_load_gathers_on_few_workers():
    """200 concurrent 200 ms invocations (pool_size 256: up to 256 in flight for this object):
    multiplexed, a handful of threads run them, not one thread each, and the pool (4 workers at
    rest, grown when a queued job finds none free) does not grow to one thread each either."""
    with FakeLambda(route) as fake, Varnishd(vcl(fake.url)) as v:
        v.request("/warm/1")
        results, woke, threads = fire_counting_wakeups(v, [f"/slow/{i}" for i in range(200)], 200)
        assert not v.panicked()
    assert [r[0] for r in results] == [200] * 200
    assert 4 <= threads <= 60, f"{threads} worker threads for 200 invocations"
    # One thread per invocation: ~200 would wake up; with 32 in flight per worker, at least 7.
    assert 1 <= len(woke) <= 60, f"{len(woke)} worker threads woke up for 200 invocations"


def test_plain_jobs_are_served_alongside_multiplexed_ones():
    """boto3-transport fetches (one at a time per worker) while direct ones keep workers busy."""
    paths = [f"/jitter/{i}" if i % 3 else f"/boto3/{i}" for i in range(150)]
    with FakeLambda(route) as fake, Varnishd(vcl(fake.url)) as v:
        results = fire(v, paths)
        assert not v.panicked()
    assert_answers(paths, results)


def test_connections_closed_by_the_endpoint_are_replaced():
    """Half of the answers close their connection (Connection: close), in the middle of other
    exchanges of the same workers; then, after a pause longer than the endpoint's idle timeout, a
    second round finds every pooled connection closed (stale) before sending, and goes through
    new ones. Nothing fails and nothing is invoked twice."""
    paths = [f"/close/{i}" if i % 2 else f"/jitter/{i}" for i in range(120)]
    again = [f"/jitter/again-{i}" for i in range(120)]
    with FakeLambda(route) as fake, Varnishd(vcl(fake.url)) as v:
        fake.server.RequestHandlerClass.timeout = 0.5    # idle keep-alive connections: closed
        results = fire(v, paths, workers=16)
        time.sleep(2.0)
        results += fire(v, again, workers=16)
        invocations = fake.invocations
        assert not v.panicked()
    assert_answers(paths + again, results)
    assert invocations == len(paths) + len(again)


def test_https_invocations_are_multiplexed():
    """An https:// endpoint: the TLS exchange runs in C (OpenSSL, _netio) inside the exchanges
    the worker polls, so once the connections are open these invocations gather on few
    workers too, and answers never cross."""
    certdir = tempfile.mkdtemp(prefix="vmod-lambda-tls-")
    os.chmod(certdir, 0o755)
    key, cert = os.path.join(certdir, "key.pem"), os.path.join(certdir, "cert.pem")
    try:
        r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
                            "1", "-subj", "/CN=localhost", "-addext",
                            "subjectAltName=DNS:localhost", "-keyout", key, "-out", cert],
                           capture_output=True)
        assert r.returncode == 0, r.stderr
        os.chmod(cert, 0o644)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        paths = [f"/slow/{i}" for i in range(100)]
        with FakeLambda(route, tls_context=ctx) as fake, \
                Varnishd(vcl(fake.url), env={"AWS_CA_BUNDLE": cert}) as v:
            status, _headers, body = v.request("/warm/1")
            assert status == 200, body[:300]
            # A first round opens the connections: a TLS connect blocks its worker (the jobs
            # queued meanwhile go to others); the second one finds them open.
            fire(v, [f"/slow/warm-{i}" for i in range(100)], workers=100)
            results, woke, _threads = fire_counting_wakeups(v, paths, 100)
            assert not v.panicked()
    finally:
        shutil.rmtree(certdir, ignore_errors=True)
    assert_answers(paths, results)
    assert 1 <= len(woke) <= 40, f"{len(woke)} worker threads woke up for 100 invocations"
