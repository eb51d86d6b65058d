#!/usr/bin/env python3
"""HTTP/2 or HTTP/1.1 keep-alive to an https:// Invoke endpoint: what the protocol alone costs a client.

Issue 23 asks whether HTTP/2 to the endpoint (many invocations multiplexed over a few TLS connections)
would beat the HTTP/1.1 keep-alive connections the transports use. Before writing an HTTP/2 client
into the poll loop, this measures the protocol itself with one well-kept client, nghttp2's h2load,
against one nginx answering the same fixed Invoke response over TLS on one port that offers both
(ALPN h2 and http/1.1): the same POST body, the same concurrency, interleaved rounds. The figure that
matters for varnishd is the client's CPU per request (the transport's work is the client's work),
and the rate.

    python bench/h2.py [--rounds 3] [--requests 100000] [--out bench/results/h2.json]

Needs nginx (with its http_v2 module, as Debian's) and h2load (Debian package nghttp2-client).
Everything runs on 127.0.0.1.
"""

import argparse
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ANSWER = ('{"statusCode":200,"headers":{"content-type":"text/plain","cache-control":"max-age=3600"},'
          '"body":"hello from the origin\\n"}')
PATH = "/2015-03-31/functions/bench-fn/invocations"
# (name, h2load arguments): 32 calls in flight in each case, as the bench's 32 clients.
CASES = [
    ("http/1.1 keep-alive, 32 connections", ["--h1", "-c", "32", "-m", "1"]),
    ("h2, 32 connections x 1 stream", ["-c", "32", "-m", "1"]),
    ("h2, 4 connections x 8 streams", ["-c", "4", "-m", "8"]),
    ("h2, 1 connection x 32 streams", ["-c", "1", "-m", "32"]),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nginx_conf(d, port, h2_listen_param):
    listen = f"listen 127.0.0.1:{port} ssl{' http2' if h2_listen_param else ''} reuseport backlog=4096;"
    http2_on = "" if h2_listen_param else "http2 on;"
    return f"""
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    http2_max_concurrent_streams 128;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        {listen}
        {http2_on}
        ssl_certificate {d}/cert.pem;
        ssl_certificate_key {d}/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:h2bench:1m;
        location /2015-03-31/functions/ {{
            default_type application/json;
            add_header x-amzn-RequestId "bench-request";
            return 200 '{ANSWER}';
        }}
    }}
}}
"""


def nginx_version():
    out = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr
    v = out.strip().split("/")[-1].split()[0]
    return tuple(int(x) for x in v.split(".")[:3]), out.strip()


def run_h2load(url, args, n, payload):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    p = subprocess.run(["h2load", "-n", str(n), "-t", "1", "-d", payload,
                        "-H", "content-type: application/json", *args, url],
                       capture_output=True, text=True, timeout=600)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    ok = fail = 0
    rps = None
    proto = None
    for line in p.stdout.splitlines():
        line = line.strip()
        if line.startswith("requests:"):
            parts = line.replace(",", "").split()
            # requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout
            ok = int(parts[parts.index("succeeded") - 1])
            fail = int(parts[parts.index("failed") - 1]) + int(parts[parts.index("errored") - 1])
        elif line.startswith("finished in"):
            rps = float(line.split()[3])
        elif line.startswith("Application protocol:"):
            proto = line.split(":", 1)[1].strip()
    if p.returncode != 0 or rps is None:
        raise SystemExit(f"h2load failed ({p.returncode}): {p.stdout[-800:]} {p.stderr[-800:]}")
    return {"req_per_s": rps, "ok": ok, "failed": fail, "protocol": proto, "wall_s": wall,
            "client_cpu_ms_per_req": cpu * 1000.0 / max(ok, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=100000)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    for tool in ("nginx", "h2load", "openssl"):
        if not shutil.which(tool):
            raise SystemExit(f"bench/h2.py: {tool} is missing (apt-get install nginx nghttp2-client openssl)")
    d = tempfile.mkdtemp(prefix="vmod-lambda-h2-")
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        os.makedirs(os.path.join(d, sub))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", f"{d}/key.pem", "-out", f"{d}/cert.pem"], check=True, capture_output=True)
    payload = os.path.join(d, "payload.json")
    with open(payload, "w") as f:
        f.write('{"version":"2.0","rawPath":"/","requestContext":{"http":{"method":"GET","path":"/"}},'
                '"headers":{"host":"bench"},"isBase64Encoded":false}')
    port = free_port()
    ver, vtext = nginx_version()
    with open(f"{d}/nginx.conf", "w") as f:
        f.write(nginx_conf(d, port, ver < (1, 25, 1)))
    ng = subprocess.Popen(["nginx", "-p", d, "-c", f"{d}/nginx.conf"])
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        url = f"https://127.0.0.1:{port}{PATH}"
        run_h2load(url, CASES[0][1], 2000, payload)     # warm-up
        rounds = {name: [] for name, _ in CASES}
        for r in range(a.rounds):
            for name, args in CASES:
                res = run_h2load(url, args, a.requests, payload)
                rounds[name].append(res)
                print(f"round {r + 1} {name}: {res['req_per_s']:.0f} req/s, "
                      f"{res['client_cpu_ms_per_req'] * 1000:.1f} us client CPU/req, "
                      f"{res['failed']} failed ({res['protocol']})", flush=True)
    finally:
        ng.terminate()
        ng.wait(10)
        shutil.rmtree(d, ignore_errors=True)
    base = statistics.median(x["req_per_s"] for x in rounds[CASES[0][0]])
    base_cpu = statistics.median(x["client_cpu_ms_per_req"] for x in rounds[CASES[0][0]])
    summary = []
    print(f"\n{a.rounds} rounds x {a.requests} requests, interleaved; {vtext}; "
          f"{platform.node()} {os.cpu_count()} cores; medians:")
    for name, _ in CASES:
        rps = statistics.median(x["req_per_s"] for x in rounds[name])
        cpu = statistics.median(x["client_cpu_ms_per_req"] for x in rounds[name])
        summary.append({"case": name, "req_per_s": rps, "client_us_per_req": cpu * 1000,
                        "rate_vs_h1": rps / base, "cpu_vs_h1": cpu / base_cpu})
        print(f"  {name:40s} {rps:9.0f} req/s ({rps / base:.2f}x)  "
              f"{cpu * 1000:6.1f} us client CPU/req ({cpu / base_cpu:.2f}x)")
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump({"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "nginx": vtext,
                       "rounds": a.rounds, "requests": a.requests, "cases": summary, "raw": rounds}, f,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
