"""Run a real varnishd with the staged fresh build, for the tests that need Varnish end to end
(tests/varnish/) and for the benchmarks (bench/run.py, bench/objects.py, bench/profile.py).

`make stage` puts the build in $VMOD_LAMBDA_STAGE (default /var/tmp/vmod-lambda-test), where the jailed
child can read it; tests that use this harness are skipped with a clear reason when it is missing.
Everything listens on 127.0.0.1 only.
"""

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from typing import Optional

STAGE = os.environ.get("VMOD_LAMBDA_STAGE", "/var/tmp/vmod-lambda-test")
VMODDIR = subprocess.run(["pkg-config", "--variable=vmoddir", "varnishapi"], capture_output=True,
                         text=True).stdout.strip() if shutil.which("pkg-config") else ""


def _skip(reason: str):
    try:
        import pytest   # here, not above: the benchmarks use this module, pytest or not
    except ImportError:
        raise RuntimeError(reason) from None
    pytest.skip(reason)


def require_stage(stage: Optional[str] = None):
    """Skip the test when the staged build or varnishd is missing."""
    stage = stage or STAGE
    if not os.path.exists(os.path.join(stage, "vmods", "libvmod_lambda.so")):
        _skip(f"no staged build in {stage}: run `make stage` (make test does)")
    if not shutil.which("varnishd"):
        _skip("varnishd is not installed")


def two_transport_vcl(function: str, url: str, timeout: str = "30s") -> str:
    """A pass VCL with two objects for the same function, d (direct) and b (boto3): a request with
    `x-transport: boto3` goes to b, any other to d."""
    return f"""vcl 4.1;
import lambda;
backend be none;
sub vcl_init {{
    new d = lambda.backend("{function}", "us-east-1", "{url}", timeout = {timeout}, transport = "direct");
    new b = lambda.backend("{function}", "us-east-1", "{url}", timeout = {timeout}, transport = "boto3");
}}
sub vcl_recv {{
    set req.backend_hint = d.backend();
    if (req.http.x-transport == "boto3") {{
        set req.backend_hint = b.backend();
    }}
    return (pass);
}}
"""


class Varnishd:
    """varnishd -F on 127.0.0.1:<free port> with the given VCL; a context manager."""

    def __init__(self, vcl: str, params: Optional[dict] = None, env: Optional[dict] = None,
                 listen: str = "127.0.0.1:0", args: tuple = (), files: Optional[dict] = None,
                 stage: Optional[str] = None, storage: str = "malloc,64m", unset: tuple = (),
                 start_timeout: float = 60):
        """files: more files next to the VCL (name -> text), for its includes; args: more
        varnishd arguments (e.g. ("-i", "node1")); stage: the staged build (default
        $VMOD_LAMBDA_STAGE); unset: environment variables the child must not inherit; env: more
        (or other) variables, applied last."""
        stage = stage or STAGE
        require_stage(stage)
        self.dir = tempfile.mkdtemp(prefix="vmod-lambda-varnishd-")
        os.chmod(self.dir, 0o755)
        for name, text in {**(files or {}), "main.vcl": vcl}.items():
            path = os.path.join(self.dir, name)
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, 0o644)
        self.vcl_path = os.path.join(self.dir, "main.vcl")
        self.workdir = os.path.join(self.dir, "n")
        args = ["varnishd", "-F", "-n", self.workdir, "-a", listen, "-T", "127.0.0.1:0",
                "-f", self.vcl_path, "-s", storage,
                "-p", f"vmod_path={stage}/vmods:{VMODDIR}", *args]
        for k, v in (params or {}).items():
            args += ["-p", f"{k}={v}"]
        self.env = {k: v for k, v in os.environ.items() if k not in unset}
        self.env.update({
            "VMOD_LAMBDA_HOME": stage,
            "AWS_ACCESS_KEY_ID": "AKIDVMODLAMBDATEST",
            "AWS_SECRET_ACCESS_KEY": "vmod-lambda-test-secret",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        })
        self.env.update(env or {})
        self.log = open(os.path.join(self.dir, "varnishd.log"), "w+")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=self.env)
        try:
            self._wait_ready(start_timeout)
        except BaseException:
            self.stop()
            raise

    def adm(self, *cmd: str, check: bool = True, timeout: Optional[float] = None) -> str:
        """varnishadm CMD; timeout: how long varnishadm waits for the answer (its own default is
        5 s; a vcl.load of a large VCL on a loaded machine may take longer)."""
        wait = ["-t", f"{timeout:g}"] if timeout else []
        r = subprocess.run(["varnishadm", "-n", self.workdir, *wait, *cmd], capture_output=True,
                           text=True, timeout=max(30, (timeout or 0) + 10))
        if check and r.returncode != 0:
            raise RuntimeError(f"varnishadm {' '.join(cmd)}: {r.stdout}{r.stderr}")
        return r.stdout

    def _wait_ready(self, timeout: float):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"varnishd exited: {self.log.read()[-3000:]}")
            try:
                if "running" in self.adm("status"):
                    addr = self.adm("debug.listen_address").split()
                    # "a0 127.0.0.1 PORT"
                    self.port = int(addr[-1])
                    self.url = f"http://127.0.0.1:{self.port}"
                    return
            except (RuntimeError, subprocess.TimeoutExpired, ValueError, IndexError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"varnishd did not start within {timeout:g} s")

    def request(self, path: str, method: str = "GET", data: bytes = None, headers=None):
        """(status, headers as a list of (name, value), body) of one request; never raises on 4xx/5xx."""
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, r.getheaders(), r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers.items(), e.read()

    def counters(self, pattern: str = "lambda.*") -> dict:
        """{name: value} of the varnishstat counters matching pattern (varnishstat -f)."""
        r = subprocess.run(["varnishstat", "-n", self.workdir, "-1", "-j", "-f", pattern],
                           capture_output=True, text=True, timeout=30, check=True)
        data = json.loads(r.stdout)
        data = data.get("counters", data)   # 7.x: {"version": 1, "counters": {...}}
        return {k: v["value"] for k, v in data.items() if isinstance(v, dict) and "value" in v}

    def panicked(self) -> bool:
        return "Panic at" in self.adm("panic.show", check=False)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
