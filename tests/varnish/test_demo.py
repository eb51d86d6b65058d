"""`make demo` as a user meets it: scripts/demo.sh with the staged build, run from a copy of the tree in
a folder the varnishd child cannot read (as a clone in Debian's /root is), and every line of the
walkthrough it prints run as printed (curl and all) with what each one promises checked: a MISS then a
HIT, no-store, the POST echo, the binary image, two cookies, the broken function served from grace, the
repair, fresh pages again, and the varnishlog / varnishadm lines. Then Ctrl-C ends it with exit 0.

Also: a demo whose varnishd cannot start fails at once with exit 1 and says why.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from support.varnish_harness import STAGE, require_stage

from support import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Demo:
    """scripts/demo.sh in its own process group, from a private copy of the tree."""

    def __init__(self, tmp, stage=STAGE):
        private = os.path.join(tmp, "private")
        os.makedirs(private)
        os.chmod(private, 0o700)  # like /root: the child (user vcache) cannot read below it
        for d in ("scripts", "examples"):
            shutil.copytree(os.path.join(ROOT, d), os.path.join(private, d))
        self.port, self.lport = free_port(), free_port()
        # the demo's work folder is world-readable, as its default (/tmp/vmod-lambda-demo) is
        self.workdir = tempfile.mkdtemp(prefix="vmod-lambda-demo-test-", dir="/tmp")
        os.chmod(self.workdir, 0o755)
        env = dict(os.environ)
        env.update({
            "VENV": sys.prefix, "DEMO_PORT": str(self.port), "DEMO_LAMBDA_PORT": str(self.lport),
            "DEMO_WORKDIR": self.workdir, "DEMO_STAGE": stage, "TMPDIR": tmp,
            # the emulator comes from this tree
            "PYTHONPATH": ROOT + os.pathsep + env.get("PYTHONPATH", ""),
        })
        self.out = open(os.path.join(tmp, "demo.out"), "w+")
        self.proc = subprocess.Popen(["sh", os.path.join(private, "scripts", "demo.sh")], env=env,
                                     stdout=self.out, stderr=subprocess.STDOUT, cwd=private,
                                     start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        self.out.seek(0)
        return self.out.read()

    def wait_for(self, text, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output() or self.proc.poll() is not None:
                break
            time.sleep(0.2)
        return text in self.output()

    def interrupt(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(90)       # varnishd stops its child first: slow on a loaded machine
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


def run(cmd: str, timeout: float = 30):
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd}: exit {r.returncode}: {r.stderr.decode(errors='replace')}"
    return r.stdout.decode(errors="replace")


def head(resp: str, name: str):
    m = re.search(rf"^{name}: *(.*?)\r?$", resp, re.I | re.M)
    return m.group(1) if m else None


def status(resp: str) -> int:
    return int(resp.split(None, 2)[1])


def body(resp: str) -> str:
    return resp.split("\r\n\r\n", 1)[1]


# The walkthrough's lines as the demo prints them (with $u, $workdir for the URL and work folder),
# each with the check of what its comment promises. A line the demo prints that is not here fails
# the test: the walkthrough is tested whole.
WALKTHROUGH = [
    "curl -i $u/",
    "curl -i $u/api/time",
    "curl -i -X POST -d '{\"hi\":1}' -H 'Content-Type: application/json' $u/api/echo",
    "curl -s $u/image.png | od -c | head -2",
    "curl -i $u/cookies",
    "curl -X POST $u/admin/break",
    "sleep 11; curl -i $u/",
    "curl -X POST $u/admin/fix",
    "varnishlog -n $workdir/varnish -g request -q 'FetchError or Backend_health'",
    "varnishadm -n $workdir/varnish backend.list -p",
]


def printed_lines(out: str, demo: Demo):
    lines = []
    for line in out.splitlines():
        cmd = line.split("  #", 1)[0].strip()
        if re.match(r"^(curl|sleep|varnishlog|varnishadm) ", cmd):
            lines.append(cmd.replace(demo.url, "$u").replace(demo.workdir, "$workdir"))
    return lines


def test_demo_walkthrough(tmp_path):
    require_stage()
    if not shutil.which("curl"):
        pytest.skip("curl is not installed (scripts/setup-deps.sh installs it)")
    demo = Demo(str(tmp_path))
    try:
        assert demo.wait_for("Ctrl-C stops both.", 90), demo.output()
        out = demo.output()
        assert printed_lines(out, demo) == WALKTHROUGH, out
        u = demo.url

        def line(cmd, timeout=30):
            return run(cmd.replace("$u", u).replace("$workdir", demo.workdir), timeout)

        # A MISS invokes the function; again within 10 s a HIT with an Age.
        first = line(WALKTHROUGH[0])
        assert status(first) == 200 and head(first, "X-Cache") == "MISS", first
        page = body(first)
        assert "Hello from Lambda" in page
        hit = line(WALKTHROUGH[0])
        assert head(hit, "X-Cache") == "HIT" and body(hit) == page, hit
        assert head(hit, "Age") is not None

        # no-store: every request invokes the function
        t1, t2 = line(WALKTHROUGH[1]), line(WALKTHROUGH[1])
        assert status(t1) == 200 and head(t2, "X-Cache") == "MISS", t2
        assert head(t1, "Cache-Control") == "no-store"

        echo = line(WALKTHROUGH[2])
        assert status(echo) == 200 and '"you_sent": "{\\"hi\\":1}"' in body(echo), echo

        # the PNG signature, byte-exact: \211 P N G \r \n 032 \n
        od = line(WALKTHROUGH[3])
        assert re.search(r"0000000 +211 +P +N +G +\\r +\\n +032 +\\n", od), od

        cookies = line(WALKTHROUGH[4])
        assert status(cookies) == 200
        assert re.findall(r"^Set-Cookie: *(\w+)=", cookies, re.I | re.M) == ["flavour", "size"], cookies

        # The function now fails on every call...
        assert "now fails" in line(WALKTHROUGH[5])
        # ...yet the expired page is served from grace: the same page, older than its 10 s TTL.
        stale = line(WALKTHROUGH[6], timeout=60)
        assert status(stale) == 200 and body(stale) == page, stale
        assert int(head(stale, "Age")) >= 10, stale

        # The repair reaches the function although the probe has marked `app` sick.
        fixed = line(WALKTHROUGH[7])
        assert "works again" in fixed, fixed

        # Fresh pages again: once the probe sees the function healthy, a request refreshes the page
        # (in the background while grace serves it) and a later one gets the new page.
        deadline = time.monotonic() + 40
        fresh = None
        while time.monotonic() < deadline:
            r = line(WALKTHROUGH[0])
            if status(r) == 200 and "Hello from Lambda" in body(r) and body(r) != page:
                fresh = r
                break
            time.sleep(1)
        assert fresh is not None, f"no fresh page within 40 s after the repair:\n{r}"

        # The log line shows the failed fetches of the broken phase (dumped: -d, not followed).
        log = line(WALKTHROUGH[8] + " -d", timeout=30)
        assert "FetchError" in log, log
        backends = line(WALKTHROUGH[9])
        # app: probed, healthy again (2 or 3 of the last 3 good), its probe history shown; admin: no probe
        assert re.search(r"^boot\.app +probe +[23]/3 +healthy", backends, re.M), backends
        assert re.search(r"-+[HX-]+ Happy", backends), backends
        assert re.search(r"^boot\.admin +\S+ +0/0 +healthy", backends, re.M), backends
    finally:
        rc = demo.interrupt()
    assert rc == 0, demo.output()
    assert "demo: stopping" in demo.output()


def test_demo_fails_fast_when_varnishd_cannot_start(tmp_path):
    require_stage()
    empty = tmp_path / "no-build"
    (empty / "vmods").mkdir(parents=True)
    os.chmod(tmp_path, 0o755)
    demo = Demo(str(tmp_path), stage=str(empty))
    t0 = time.monotonic()
    try:
        demo.proc.wait(60)
    except subprocess.TimeoutExpired:
        demo.interrupt()
        pytest.fail(f"the demo kept waiting for a varnishd that could not start:\n{demo.output()}")
    rc = demo.interrupt()  # already ended: collects it, removes its work folder
    waited = time.monotonic() - t0
    out = demo.output()
    assert rc == 1, out
    assert "demo: varnishd did not start" in out, out
    assert "lambda" in out  # varnishd's own reason: the VMOD could not be found
    print(f"gave up after {waited:.1f} s")
