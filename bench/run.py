#!/usr/bin/env python3
"""vmod-lambda benchmarks, side by side in one run (`make bench`).

One nginx is the origin of every case: native cases fetch /native/..., Lambda cases POST the Invoke API
path and get a fixed Lambda response JSON (bench/nginx.conf.in). One varnishd runs the staged build
(started by the tests' harness, tests/support/varnish_harness.py, with fake credentials) with the VCL
below; wrk drives it from the same machine. Every case runs ROUNDS times, interleaved, for a fixed
duration; the results go to bench/results/<stamp>.json, then bench/report.py writes BENCHMARKS.md
and the chart and prints the ratios against the targets of issue 5.

    python bench/run.py [--stage DIR] [--rounds 3] [--duration 5] [--quick] [--only streaming|mib]

The streaming cases (s: first-byte time, t: throughput of a 100 MiB streamed body) use the
product's emulator as the origin of the Lambda backends (bench/stream_handlers.py); `--only
streaming` (or BENCH_ONLY=streaming) runs only them, and bench/report.py then takes the other
sections from bench/benchmarks.json. `--only mib` (or BENCH_ONLY=mib) runs only the 1 MiB body
cases (m: text, n: binary in base64; each against a native pass of the same bytes, issue 17).
"""

import argparse
import base64
import datetime
import inspect
import json
import os
import platform
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "AKIDVMODLAMBDABENCH",
    "AWS_SECRET_ACCESS_KEY": "vmod-lambda-bench-secret",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
}
SLOW_LATENCY = 0.1          # the 100 ms function of bench/nginx.conf.in
TRICKLE_LINE = ("0123456789abcdef" * 64)[:1023]     # + "\n": the 1 KiB chunks of the trickle cases
BIG_MIB = 100               # the streamed body of the throughput cases

sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))     # the tests' support package: harness, HTTP helpers

from support.http_helpers import timed_get  # noqa: E402
from support.varnish_harness import Varnishd  # noqa: E402


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def cpu_ticks(pid):
    """utime + stime of a process (all its threads), in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def mem_kb(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    return out


def ctx_switches(pid):
    """Context switches (voluntary + involuntary) so far of each live thread of a process: tid ->
    count (see ctx_delta)."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                out[tid] = sum(int(line.split()[1]) for line in f if "ctxt_switches:" in line)
        except (OSError, ValueError):
            pass
    return out


def ctx_delta(before, after):
    """The context switches between two ctx_switches() of the threads alive at the end (those
    started meanwhile from 0). A thread that ended meanwhile (Varnish retires idle pool threads)
    takes its count with it: it is left out rather than subtracted, so the figure is never negative
    but may be a little low."""
    return sum(n - before.get(tid, 0) for tid, n in after.items())


def reset_hwm(pid):
    """Writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def tool_version(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (r.stdout + r.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return None


# ---------------------------------------------------------------------------------------------- origin

class Nginx:
    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "nginx")
        os.makedirs(os.path.join(self.dir, "static"))
        self.port = free_port()
        self.tls_port = free_port()
        self._static()
        self.ca_bundle = self._certificate()
        with open(os.path.join(HERE, "nginx.conf.in")) as f:
            conf = f.read()
        trickle = "\n".join(
            ("            echo_sleep 0.1;\n" if i else "") +
            f"            echo {TRICKLE_LINE};\n            echo_flush;" for i in range(11))
        conf = (conf.replace("@TRICKLE@", trickle)
                .replace("@DIR@", self.dir).replace("@PORT@", str(self.port))
                .replace("@TLSPORT@", str(self.tls_port))
                .replace("@ECHO@", f"load_module {ECHO_MODULE};"))
        self.conf = os.path.join(self.dir, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.access_log = os.path.join(self.dir, "access.log")
        self.proc = subprocess.Popen(["nginx", "-c", self.conf, "-p", self.dir + "/"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"nginx did not start; see {self.dir}/error.log")
                time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"
        self.tls_url = f"https://127.0.0.1:{self.tls_port}"

    def _certificate(self):
        """A self-signed certificate for 127.0.0.1 (and localhost), made now with the cryptography
        package; its file is the CA bundle varnishd trusts (AWS_CA_BUNDLE)."""
        import ipaddress
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
        tls = os.path.join(self.dir, "tls")
        os.makedirs(tls)
        os.chmod(tls, 0o755)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vmod-lambda bench")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                    critical=False)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        with open(os.path.join(tls, "key.pem"), "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        path = os.path.join(tls, "cert.pem")
        with open(path, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        os.chmod(path, 0o644)
        return path

    def tls_connections(self):
        """{connection number: resumed} of the https:// server's requests so far (access log)."""
        out = {}
        with open(self.access_log) as f:
            for line in f:
                if " tls c" in line:
                    parts = line.split()
                    out.setdefault(parts[4], parts[5:6] == ["r"])
        return out

    def _static(self):
        # 5 MB of text (lines of hex digits): the native body, and the same bytes as the body of a
        # Lambda response JSON (text, so no base64: 5 MB base64 would exceed the 6 MB payload limit).
        line = "0123456789abcdef" * 64 + "\n"
        big = (line * (5 * 1024 * 1024 // len(line) + 1))[:5 * 1024 * 1024]
        with open(os.path.join(self.dir, "static", "big.txt"), "w") as f:
            f.write(big)
        with open(os.path.join(self.dir, "static", "lambda-big.json"), "w") as f:
            json.dump({"statusCode": 200, "headers": {"content-type": "text/plain"}, "body": big},
                      f, separators=(",", ":"))
        # m, n (issue 17): 1 MiB of the same text lines, and 1 MiB of binary (seeded, so every run
        # serves the same bytes), natively and as the body of a Lambda response JSON (the binary
        # one in base64, isBase64Encoded).
        m1 = big[:1 << 20]
        with open(os.path.join(self.dir, "static", "m1.txt"), "w") as f:
            f.write(m1)
        with open(os.path.join(self.dir, "static", "lambda-m1text.json"), "w") as f:
            json.dump({"statusCode": 200, "headers": {"content-type": "text/plain"}, "body": m1},
                      f, separators=(",", ":"))
        m1bin = random.Random(17).randbytes(1 << 20)
        with open(os.path.join(self.dir, "static", "m1.bin"), "wb") as f:
            f.write(m1bin)
        with open(os.path.join(self.dir, "static", "lambda-m1bin.json"), "w") as f:
            json.dump({"statusCode": 200, "headers": {"content-type": "application/octet-stream"},
                       "body": base64.b64encode(m1bin).decode(), "isBase64Encoded": True},
                      f, separators=(",", ":"))
        # 100 MiB for the native reference of the streaming throughput case (t).
        block = ("0123456789abcdef" * 4096).encode()
        with open(os.path.join(self.dir, "static", "big100.txt"), "wb") as f:
            for _ in range(BIG_MIB * 16):
                f.write(block)

    def worker_pid(self):
        kids = children(self.proc.pid)
        return kids[0] if kids else None

    def count(self, pattern):
        """Lines of the access log matching pattern (a regex)."""
        rx = re.compile(pattern)
        with open(self.access_log) as f:
            return sum(1 for line in f if rx.search(line))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class EmulatorOrigin:
    """The product's emulator (python -m lambda_emulator) serving bench/stream_handlers.py, in
    its own process: the origin of the streaming Lambda cases."""

    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "emulator")
        os.makedirs(self.dir)
        self.port = free_port()
        cfg = os.path.join(self.dir, "functions.json")
        fn = {"timeout": 120, "reserved_concurrency": 4, "path": [HERE]}
        with open(cfg, "w") as f:
            json.dump({"functions": {"bench-trickle": {"handler": "stream_handlers:trickle", **fn},
                                     "bench-stream-big": {"handler": "stream_handlers:big", **fn}}},
                      f)
        self.log = open(os.path.join(self.dir, "emulator.log"), "w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "lambda_emulator", "--quiet",
                                      "--port", str(self.port), "--config", cfg],
                                     stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT,
                                     env={**os.environ, "PYTHONPATH": ROOT})
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.log.seek(0)
                    raise RuntimeError(f"the emulator did not start: {self.log.read()[-2000:]}")
                time.sleep(0.1)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# --------------------------------------------------------------------------------------------- varnish

def vcl(origin_port, has_transport, fast_transport, emulator_port=None, tls_port=None):
    """emulator_port: the origin of the streaming cases (bench/profile.py, which has none, leaves
    their objects pointing at nginx, unused); tls_port: nginx's https:// server (fn_tls)."""
    ep = f'endpoint_url = "http://127.0.0.1:{origin_port}"'
    tls_ep = (f'endpoint_url = "https://127.0.0.1:{tls_port}"' if tls_port else ep)
    emulator_port = emulator_port or origin_port

    def obj(name, function, pool=64, timeout="10s", transport=None, extra="", endpoint=ep):
        t = f', transport = "{transport}"' if (has_transport and transport) else ""
        return (f'        new {name} = lambda.backend(function_name = "{function}", '
                f'region = "us-east-1", {endpoint}, timeout = {timeout}, pool_size = {pool}{t}{extra});\n')

    def emu(name, function, streaming):
        return (f'        new {name} = lambda.backend(function_name = "{function}", '
                f'region = "us-east-1", endpoint_url = "http://127.0.0.1:{emulator_port}", '
                f'timeout = 120s, pool_size = 4, event_format = "2.0", '
                f'streaming = {"true" if streaming else "false"});\n')

    return f"""vcl 4.1;
import lambda;

backend origin {{ .host = "127.0.0.1"; .port = "{origin_port}"; }}

sub vcl_init {{
{obj("fn", "bench-fn", transport=fast_transport)}\
{obj("fn_boto3", "bench-fn", transport="boto3")}\
{obj("fn_tls", "bench-fn", transport=fast_transport, endpoint=tls_ep)}\
{obj("slow", "bench-slow", pool=320, transport=fast_transport)}\
{obj("slow_boto3", "bench-slow", pool=320, transport="boto3")}\
{obj("coalesce", "bench-coalesce", transport=fast_transport)}\
{obj("big", "bench-big", pool=16, transport=fast_transport)}\
{obj("m1text", "bench-m1text", pool=16, transport=fast_transport)}\
{obj("m1bin", "bench-m1bin", pool=16, transport=fast_transport)}\
{emu("trickle_stream", "bench-trickle", True)}\
{emu("trickle_buffered", "bench-trickle", False)}\
{emu("big_stream", "bench-stream-big", True)}\
}}

sub vcl_recv {{
    if (req.url ~ "^/(native|lambda)/hit/") {{
        # The two hit cases first, through the same two matches: they differ only by the backend.
        if (req.url ~ "^/native/") {{
            set req.backend_hint = origin;
        }} else {{
            set req.backend_hint = fn.backend();
        }}
        return (hash);
    }}
    if (req.url ~ "^/native/(pass|big|big100|trickle|m1text|m1bin)/") {{
        set req.backend_hint = origin;
        return (pass);
    }}
    if (req.url ~ "^/lambda/pass/") {{
        set req.backend_hint = fn.backend();
        return (pass);
    }}
    if (req.url ~ "^/https/pass/") {{
        set req.backend_hint = fn_tls.backend();
        return (pass);
    }}
    if (req.url ~ "^/https/invoke/") {{
        set req.http.x-result = fn_tls.invoke(req.url);
        return (synth(200));
    }}
    if (req.url ~ "^/boto3/pass/") {{
        set req.backend_hint = fn_boto3.backend();
        return (pass);
    }}
    if (req.url ~ "^/lambda/invoke/") {{
        set req.http.x-result = fn.invoke(req.url);
        return (synth(200));
    }}
    if (req.url ~ "^/boto3/invoke/") {{
        set req.http.x-result = fn_boto3.invoke(req.url);
        return (synth(200));
    }}
    if (req.url ~ "^/lambda/latency/") {{
        set req.backend_hint = slow.backend();
        return (pass);
    }}
    if (req.url ~ "^/boto3/latency/") {{
        set req.backend_hint = slow_boto3.backend();
        return (pass);
    }}
    if (req.url ~ "^/lambda/coalesce/") {{
        set req.backend_hint = coalesce.backend();
        return (hash);
    }}
    if (req.url ~ "^/lambda/big/") {{
        set req.backend_hint = big.backend();
        return (pass);
    }}
    if (req.url ~ "^/lambda/m1text/") {{
        set req.backend_hint = m1text.backend();
        return (pass);
    }}
    if (req.url ~ "^/lambda/m1bin/") {{
        set req.backend_hint = m1bin.backend();
        return (pass);
    }}
    if (req.url ~ "^/stream/trickle/") {{
        set req.backend_hint = trickle_stream.backend();
        return (pass);
    }}
    if (req.url ~ "^/buffered/trickle/") {{
        set req.backend_hint = trickle_buffered.backend();
        return (pass);
    }}
    if (req.url ~ "^/stream/big/") {{
        set req.backend_hint = big_stream.backend();
        return (pass);
    }}
    return (synth(404));
}}

sub vcl_synth {{
    if (resp.status == 200 && req.http.x-result) {{
        set resp.http.content-type = "application/json";
        set resp.body = req.http.x-result;
        return (deliver);
    }}
}}
"""


class Varnish(Varnishd):
    """The benchmarks' varnishd: the tests' harness with the staged build of --stage, 256 MB of
    malloc storage, the benchmark's fake credentials and nothing of the caller's AWS or loader
    settings; AWS_CA_BUNDLE only for the https:// origin's certificate (case group k)."""

    def __init__(self, workdir, stage, vcl_text, ca_bundle=None):
        unset = ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL",
                 "AWS_ENDPOINT_URL_LAMBDA", "VMOD_LAMBDA_LOADER", "VMOD_LAMBDA_NO_DEEPBIND",
                 "AWS_CA_BUNDLE")
        env = dict(FAKE_AWS, **({"AWS_CA_BUNDLE": ca_bundle} if ca_bundle else {}))
        os.chmod(workdir, 0o755)        # the jailed child reads the CA bundle below it
        super().__init__(vcl_text, env=env, stage=stage, storage="malloc,256m", unset=unset,
                         start_timeout=90)

    def child_pid(self):
        kids = [p for p in children(self.proc.pid) if os.path.exists(f"/proc/{p}")]
        # The cache child is the long-lived one (VCC compiler processes come and go).
        for p in kids:
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    if b"varnishd" in f.read():
                        return p
            except OSError:
                pass
        return kids[0] if kids else None


# ------------------------------------------------------------------------------------------------ wrk

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else None


def wrk(url, conns, duration, threads=2, script=None, timeout="10s"):
    cmd = ["wrk", "-t", str(min(threads, conns)), "-c", str(conns), "-d", f"{duration}s",
           "--latency", "--timeout", timeout]
    if script:
        cmd += ["-s", script]
    cmd.append(url)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60).stdout
    res = {"requests": 0, "rps": 0.0, "p50_ms": None, "p99_ms": None, "errors": 0}
    m = re.search(r"(\d+) requests in", out)
    if m:
        res["requests"] = int(m.group(1))
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        res["rps"] = float(m.group(1))
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        if m:
            res[key] = _ms(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        res["errors"] += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        res["errors"] += sum(int(x) for x in m.groups())
    return res


# ------------------------------------------------------------------------------------------ the cases

def cases(has_transport, fast):
    """(id, group, label, url path, connections, wrk script, origin log pattern)."""
    lam = f"lambda ({fast})" if has_transport else "lambda"
    out = [
        ("a_native_pass", "a", "native backend, pass", "/native/pass/x", 32, None, r" /native/pass/"),
        ("b_lambda_pass", "b", f"{lam} backend, pass", "/lambda/pass/x", 32, None, r"bench-fn/"),
        ("c_invoke", "c", f"{lam} invoke() + synth", "/lambda/invoke/x", 32, None, r"bench-fn/"),
        ("d_native_hit", "d", "native-backed hit", "/native/hit/x", 32, None, r" /native/hit/"),
        ("d_lambda_hit", "d", f"{lam}-backed hit", "/lambda/hit/x", 32, None, r"bench-fn/"),
        ("f_latency", "f", f"{lam}, 100 ms function, 256 clients", "/lambda/latency/", 256,
         "distinct.lua", r"bench-slow/"),
    ]
    if has_transport and fast != "boto3":
        out[2:2] = [("b_boto3_pass", "b", "lambda (boto3) backend, pass", "/boto3/pass/x", 32, None,
                     r"bench-fn/")]
        out[4:4] = [("c_boto3_invoke", "c", "lambda (boto3) invoke() + synth", "/boto3/invoke/x", 32,
                     None, r"bench-fn/")]
        out.append(("f_boto3_latency", "f", "lambda (boto3), 100 ms function, 256 clients",
                    "/boto3/latency/", 256, "distinct.lua", r"bench-slow/"))
    # k. The same Lambda cases through an http:// and an https:// endpoint of the same nginx, side
    # by side (issue 23): handshakes per 1,000 requests are counted for the https ones.
    out += [
        ("k_http_pass", "k", f"{lam} backend, pass, http:// endpoint", "/lambda/pass/x", 32, None,
         r"bench-fn/.* 200$"),
        ("k_https_pass", "k", f"{lam} backend, pass, https:// endpoint", "/https/pass/x", 32, None,
         r" tls c"),
        ("k_http_invoke", "k", f"{lam} invoke() + synth, http:// endpoint", "/lambda/invoke/x", 32,
         None, r"bench-fn/.* 200$"),
        ("k_https_invoke", "k", f"{lam} invoke() + synth, https:// endpoint", "/https/invoke/x",
         32, None, r" tls c"),
    ]
    # m, n (issue 17): 1 MiB bodies, pass, each against a native pass of the same bytes: text (the
    # JSON string unescaped) and binary (base64 in the payload, decoded).
    out += [
        ("m_native_1m_text", "m", "native backend, 1 MiB text body, pass", "/native/m1text/x", 8,
         None, r" /native/m1text/"),
        ("m_lambda_1m_text", "m", f"{lam} backend, 1 MiB text body, pass", "/lambda/m1text/x", 8,
         None, r"lambda-m1text\.json"),
        ("n_native_1m_bin", "n", "native backend, 1 MiB binary body, pass", "/native/m1bin/x", 8,
         None, r" /native/m1bin/"),
        ("n_lambda_1m_bin", "n", f"{lam} backend, 1 MiB binary body (base64), pass",
         "/lambda/m1bin/x", 8, None, r"lambda-m1bin\.json"),
    ]
    return out


def measure(v, ng, case, duration):
    cid, group, label, path, conns, script, pattern = case
    child = v.child_pid()
    worker = ng.worker_pid()
    n0 = ng.count(pattern)
    tls0 = ng.tls_connections() if " tls " in pattern else None
    hwm_reset = reset_hwm(child)
    mem0 = mem_kb(child)
    x0 = ctx_switches(child)
    c0, o0 = cpu_ticks(child), cpu_ticks(worker)
    load0 = loadavg()
    t0 = time.monotonic()
    res = wrk(v.url + path, conns, duration,
              script=os.path.join(HERE, script) if script else None)
    wall = time.monotonic() - t0
    c1, o1 = cpu_ticks(child), cpu_ticks(worker)
    x1 = ctx_switches(child)
    mem1 = mem_kb(child)
    time.sleep(0.2)             # let nginx write its last log lines
    n = res["requests"] or 1
    if tls0 is not None:
        # New connections to the https:// server during the run: each one a TLS handshake.
        new = {c: r for c, r in ng.tls_connections().items() if c not in tls0}
        res["tls_handshakes"] = len(new)
        res["tls_resumed"] = sum(1 for r in new.values() if r)
        res["tls_handshakes_per_1000"] = len(new) * 1000.0 / n
    res.update({
        "case": cid, "group": group, "label": label, "connections": conns, "duration_s": duration,
        "wall_s": round(wall, 2),
        "varnishd_cpu_ms_per_req": (c1 - c0) * 1000.0 / CLK_TCK / n,
        "origin_cpu_ms_per_req": (o1 - o0) * 1000.0 / CLK_TCK / n,
        "varnishd_ctx_switches_per_req": ctx_delta(x0, x1) / n,
        "rss_before_kb": mem0.get("VmRSS"), "rss_after_kb": mem1.get("VmRSS"),
        "peak_rss_kb": mem1.get("VmHWM"), "peak_is_per_run": hwm_reset,
        "origin_invocations": ng.count(pattern) - n0,
        "loadavg_before": load0, "loadavg_after": loadavg(),
    })
    return res


TRICKLE_CASES = [
    # (id, label, path)
    ("s_native_trickle", "native backend (nginx, flushed chunks), pass", "/native/trickle/x"),
    ("s_stream_trickle", "lambda streaming = true, pass", "/stream/trickle/x?mode=http"),
    ("s_buffered_trickle", "lambda buffered (streaming = false), pass", "/buffered/trickle/x"),
]


def first_byte_cases(v, results, rounds, quick):
    """s: first-byte time of a body written over ~1 s."""
    # s. One request at a time, the cases interleaved, `runs` times each (after one warm-up each:
    # the emulator's worker processes start on the first invocation).
    runs = 2 if quick else max(5, rounds)
    for cid, label, path in TRICKLE_CASES:
        timed_get(v.port, path)
    for rnd in range(1, runs + 1):
        for cid, label, path in (TRICKLE_CASES if rnd % 2 else TRICKLE_CASES[::-1]):
            load0 = loadavg()
            res = timed_get(v.port, path)
            res.update({"case": cid, "label": label, "round": rnd, "loadavg_before": load0,
                        "loadavg_after": loadavg()})
            results["first_byte"].append(res)
            log(f"round {rnd} {cid:<20} status {res['status']}  head {res['head_ms']:.1f} ms  "
                f"first byte {res['first_byte_ms']:.1f} ms  end {res['total_ms']:.1f} ms  "
                f"{res['bytes']} bytes")



def throughput_cases(v, emu, results, rounds, quick):
    """t: throughput of a 100 MiB streamed body, pass, one client reading as fast as it can; the
    child's CPU and peak RSS growth per run. The emulator alone (its InvokeWithResponseStream
    answer read raw, event stream framing included) is the origin's own ceiling.

    Run first, on a fresh child, and case by case rather than interleaved: the child's allocator
    keeps freed memory for a while and reuses it, so a run after one that used much memory shows
    no growth whatever it uses. The streaming runs come first, the native ones (whose pass body
    Varnish holds in Transient storage) last."""
    event = json.dumps({"rawPath": "/", "queryStringParameters": {"mb": str(BIG_MIB)}}).encode()
    tcases = [
        ("t_native_big", f"native backend, {BIG_MIB} MiB static file, pass",
         lambda: timed_get(v.port, "/native/big100/x")),
        ("t_stream_big", f"lambda streaming = true, {BIG_MIB} MiB, pass",
         lambda: timed_get(v.port, f"/stream/big/x?mb={BIG_MIB}")),
        ("t_emulator_direct", f"the emulator alone, {BIG_MIB} MiB (raw event stream, no Varnish)",
         lambda: timed_get(emu.port, "/2021-11-15/functions/bench-stream-big/"
                                     "response-streaming-invocations", method="POST", body=event)),
    ]
    runs = 1 if quick else min(3, max(rounds, 1))
    timed_get(v.port, "/stream/big/x?mb=1")
    for cid, label, fn in (tcases[1], tcases[2], tcases[0]):
        for rnd in range(1, runs + 1):
            child = v.child_pid()
            hwm_reset = reset_hwm(child)
            mem0 = mem_kb(child)
            c0 = cpu_ticks(child)
            load0 = loadavg()
            res = fn()
            c1 = cpu_ticks(child)
            mem1 = mem_kb(child)
            mb = res["bytes"] / 1e6
            res.update({
                "case": cid, "label": label, "round": rnd,
                "mb_per_s": mb / (res["total_ms"] / 1000.0) if res["total_ms"] else None,
                "varnishd_cpu_ms_per_mb": (c1 - c0) * 1000.0 / CLK_TCK / mb if mb else None,
                "rss_before_kb": mem0.get("VmRSS"), "rss_after_kb": mem1.get("VmRSS"),
                "peak_rss_kb": mem1.get("VmHWM"), "peak_is_per_run": hwm_reset,
                "loadavg_before": load0, "loadavg_after": loadavg()})
            if cid == "t_emulator_direct":      # not through Varnish: no child figures
                for k in ("varnishd_cpu_ms_per_mb", "rss_before_kb", "rss_after_kb", "peak_rss_kb"):
                    res[k] = None
            results["stream_throughput"].append(res)
            log(f"round {rnd} {cid:<18} status {res['status']}  {res['bytes']} bytes in "
                f"{res['total_ms'] / 1000:.2f} s = {res['mb_per_s']:.0f} MB/s  child RSS "
                f"{res['rss_before_kb']} -> peak {res['peak_rss_kb']} kB")


def client_loop(url, transport, threads, duration):
    py = sys.executable
    r = subprocess.run([py, os.path.join(HERE, "client_loop.py"), url, transport, str(threads),
                        str(duration)], capture_output=True, text=True, timeout=duration + 120,
                       env={**os.environ, **FAKE_AWS})
    try:
        res = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        res = {"error": (r.stdout + r.stderr)[-2000:]}
    return res


def machine_info(stage):
    info = {"nproc": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.*)$", f.read(), re.M)
            info["cpu"] = m.group(1) if m else None
    except OSError:
        info["cpu"] = None
    info["varnish"] = tool_version(["varnishd", "-V"])
    info["nginx"] = tool_version(["nginx", "-v"])
    info["wrk"] = tool_version(["wrk", "-v"])
    info["debian"] = open("/etc/debian_version").read().strip() \
        if os.path.exists("/etc/debian_version") else None
    try:
        r = subprocess.run([os.path.join(stage, "bin", "python3"), "-c",
                            "import sys, boto3, botocore; print(sys.version.split()[0], boto3.__version__,"
                            " botocore.__version__)"], capture_output=True, text=True, timeout=60)
        pyv, b3, bc = r.stdout.split()
        info.update({"home_python": pyv, "boto3": b3, "botocore": bc})
    except (OSError, ValueError, subprocess.TimeoutExpired):
        pass
    return info


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stage", default=os.environ.get("STAGE", "/var/tmp/vmod-lambda-test"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5, help="seconds per measurement")
    ap.add_argument("--quick", action="store_true", help="1 round of 2 s: checks the suite works")
    ap.add_argument("--out", default=None, help="results file (default bench/results/<stamp>.json)")
    ap.add_argument("--only", choices=("all", "streaming", "mib"),
                    default=os.environ.get("BENCH_ONLY") or "all",
                    help="run only these cases (default $BENCH_ONLY or all); mib: the 1 MiB "
                         "bodies (m, n) only, as --cases mn")
    ap.add_argument("--cases", default=os.environ.get("BENCH_CASES") or "abcdefghkmnst",
                    help="case groups to run, by letter (default $BENCH_CASES or abcdefghkmnst)")
    args = ap.parse_args()
    if args.only == "mib":
        args.only, args.cases = "all", "mn"
    if args.quick:
        args.rounds, args.duration = 1, 2
    duration = args.duration

    for tool in ("nginx", "wrk", "varnishd", "varnishadm"):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} is missing: run bench/setup.sh (make bench does)")
    if not os.path.exists(os.path.join(args.stage, "vmods", "libvmod_lambda.so")):
        sys.exit(f"bench: no staged build in {args.stage}: run `make stage STAGE={args.stage}`")

    from vmod_lambda import config as vconfig
    has_transport = "transport" in inspect.signature(vconfig.validate_backend).parameters
    fast = getattr(vconfig, "DEFAULT_TRANSPORT", "boto3")
    transports = list(getattr(vconfig, "TRANSPORTS", ("boto3",)))

    started = datetime.datetime.now(datetime.timezone.utc)
    results = {"started": started.isoformat(timespec="seconds"), "rounds": args.rounds,
               "duration_s": duration, "default_transport": fast, "transports": transports,
               "machine": machine_info(args.stage), "runs": [], "client_loop": [],
               "coalescing": [], "big": [], "first_byte": [], "stream_throughput": [],
               "only": args.only}
    workdir = tempfile.mkdtemp(prefix="vmod-lambda-bench-")
    ng = v = emu = None
    try:
        ng = Nginx(workdir)
        log(f"nginx on {ng.url}")
        emu = EmulatorOrigin(workdir)
        log(f"emulator on {emu.url}")
        v = Varnish(workdir, args.stage, vcl(ng.port, has_transport, fast, emu.port, ng.tls_port),
                    ca_bundle=ng.ca_bundle)
        log(f"varnishd on {v.url} (child pid {v.child_pid()}), stage {args.stage}")
        results["varnishd_rss_start_kb"] = mem_kb(v.child_pid()).get("VmRSS")
        the_cases = [c for c in cases(has_transport, fast) if c[1] in args.cases]

        # t. Streaming throughput first, on the fresh child (see throughput_cases).
        if "t" in args.cases:
            throughput_cases(v, emu, results, args.rounds, args.quick)
        if args.only == "all":
            # Warm up every path once (connections, thread pools, first objects in cache).
            for case in the_cases:
                wrk(v.url + case[3], min(case[4], 32), 1,
                    script=os.path.join(HERE, case[5]) if case[5] else None)
            for rnd in range(1, args.rounds + 1):
                # Every other round in reverse order, so that a load drift does not always favour the
                # case measured first of a pair (native before Lambda).
                for case in (the_cases if rnd % 2 else the_cases[::-1]):
                    res = measure(v, ng, case, duration)
                    res["round"] = rnd
                    results["runs"].append(res)
                    log(f"round {rnd} {case[0]:<18} {res['rps']:9.0f} req/s  p50 {res['p50_ms']} ms  "
                        f"p99 {res['p99_ms']} ms  cpu {res['varnishd_cpu_ms_per_req']:.3f} ms/req  "
                        f"origin calls {res['origin_invocations']}  errors {res['errors']}  "
                        f"load {res['loadavg_after'][0]}")

            # e. the bare client loop, outside Varnish.
            for rnd in range(1, args.rounds + 1 if "e" in args.cases else 1):
                for transport in transports:
                    for threads in (1, 4):
                        load0 = loadavg()
                        res = client_loop(ng.url, transport, threads, duration)
                        res.update({"transport": transport, "threads": threads, "round": rnd,
                                    "loadavg_before": load0, "loadavg_after": loadavg()})
                        results["client_loop"].append(res)
                        log(f"round {rnd} client loop {transport} x{threads}: "
                            f"{res.get('rps', 0):.0f} invokes/s, "
                            f"{res.get('cpu_ms_per_req') or 0:.3f} ms CPU each {res.get('error', '')}")

            # g. coalescing: 200 clients on one cold cacheable URL (a 100 ms function), count the calls.
            for rnd in range(1, args.rounds + 1 if "g" in args.cases else 1):
                case = ("g_coalescing", "g", "200 clients, one cacheable URL",
                        f"/lambda/coalesce/{started.strftime('%Y%m%d%H%M%S')}-{rnd}", 200, None,
                        r"bench-coalesce/")
                res = measure(v, ng, case, min(duration, 3))
                res["round"] = rnd
                results["coalescing"].append(res)
                log(f"round {rnd} coalescing: {res['requests']} requests, "
                    f"{res['origin_invocations']} invocation(s) at the origin, errors {res['errors']}")

            # h. 5 MB bodies, pass; native first, then Lambda, peak RSS of the child per run.
            for case in (("h_native_big", "h", "native, 5 MB bodies, pass", "/native/big/x", 8, None,
                          r" /native/big/"),
                         ("h_lambda_big", "h", "lambda, 5 MB bodies, pass", "/lambda/big/x", 8, None,
                          r"lambda-big\.json")):
                for rnd in range(1, args.rounds + 1 if "h" in args.cases else 1):
                    res = measure(v, ng, case, duration)
                    res["round"] = rnd
                    results["big"].append(res)
                    log(f"round {rnd} {case[0]}: {res['rps']:.0f} req/s, p99 {res['p99_ms']} ms, "
                        f"RSS {res['rss_before_kb']} -> peak {res['peak_rss_kb']} kB, "
                        f"errors {res['errors']}")
        # s. Streaming backends: first-byte time.
        if "s" in args.cases:
            first_byte_cases(v, results, args.rounds, args.quick)
        results["varnishd_rss_end_kb"] = mem_kb(v.child_pid()).get("VmRSS")
        results["panicked"] = v.panicked()
    finally:
        if v:
            v.stop()
        if ng:
            ng.stop()
        if emu:
            emu.stop()
    results["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    os.makedirs(RESULTS, exist_ok=True)
    out = args.out or os.path.join(RESULTS, started.strftime("%Y%m%dT%H%M%SZ") + ".json")
    with open(out, "w") as f:
        json.dump(results, f, indent=1)
    shutil.rmtree(workdir, ignore_errors=True)
    log(f"results: {out}")
    return out


if __name__ == "__main__":
    main()
