"""Network faults in a namespace of the test's own: do the deadlines hold? (issue 17)

A varnishd with the staged build and a Lambda endpoint (tests/support/fake_lambda.py) run inside a network
namespace made for the run (`ip netns add vmodlambda-<pid>`, its own `lo`, nothing else: no address
or route of the host is touched). Faults are applied to the endpoint's traffic inside that namespace,
then healed:

  delay      the endpoint waits 0.2-2 s before it answers (not netem: on the namespace's one `lo`
             it would delay the client's own requests to varnishd as well; the kernel here has
             none anyway)
  loss       30% of the packets to and from the endpoint's port dropped (nftables numgen)
  trickle    the endpoint sends its answer one byte every 0.5 s
  reset      half the connections refused with a TCP reset (nftables reject), the others reset
             by the endpoint (SO_LINGER 0) 0.3 s into the call
  blackhole  every packet to and from the endpoint's port dropped (nftables drop)

For each fault and each transport (direct, boto3), N backend fetches and N invoke() calls of objects
with timeout = 1s, several at once; the client's own clock says how long each took. Reported: requests
sent, answered within the deadline (timeout + 100 ms + a harness slack), the longest wait and its
overshoot past timeout + 100 ms, panics (panic.show and MGT.child_start), and the child's file
descriptors and threads once the endpoint is healed, against the healthy baseline. Then vcl.discard
of a VCL of 50 objects whose invoke_async() calls and probes are stuck on a blackholed endpoint: how
long the CLI waits, and the threads once those calls have ended.

Run by tests/varnish/test_netns_faults.py; by hand (root): `python tests/support/netns_faults.py --reliability
RELIABILITY.md` writes the figures into RELIABILITY.md's "Network faults" section.
"""

import argparse
import collections
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))     # tests/: the support package

TIMEOUT = 1.0           # the objects' timeout
MARGIN = 0.1            # the documented margin of a call's deadline
# The trickle: one byte every TRICKLE seconds, well within the timeout, so that a per-read (idle)
# timeout never fires and only a deadline for the whole call stops it.
TRICKLE = 0.5
SLACK = 0.4             # the harness's own: client threads, urllib, a loaded 2-core machine
# The trickle last: a transport that keeps reading it past the deadline holds its connections for
# minutes (the answer is ~150 bytes at one a second), which must not be counted against the others.
FAULTS = ("delay", "loss", "reset", "blackhole", "trickle")
TRANSPORTS = ("direct", "boto3")
DISCARD_OBJECTS = 50
DISCARD_TIMEOUT = 4.0   # the discarded objects' timeout: their calls stay stuck this long
NFT_TABLE = "vmodlambda_faults"
# The main objects' pool_size: their sum (64) is below the workers the stuck calls of the discarded
# VCL hold (the boto3 transport takes one each), so that the discard shrinks the pool below them.
MAIN_POOL = 16


def netns_unavailable() -> str:
    """Why the fault test cannot run here ("" when it can)."""
    if os.geteuid() != 0:
        return "needs root (ip netns add)"
    for tool in ("ip", "nft"):
        if not shutil.which(tool):
            return f"`{tool}` is not installed (iproute2, nftables: scripts/setup-deps.sh)"
    name = f"vmodlambda-probe-{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if r.returncode != 0:
        return f"`ip netns add` does not work here: {r.stderr.strip()}"
    try:
        r = subprocess.run(["ip", "netns", "exec", name, "nft", "add", "table", "inet", "probe"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            return f"nftables does not work in a network namespace here: {r.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return ""


def run_in_netns(timeout: float = 300.0) -> dict:
    """Make the namespace, run this script inside it, remove it; the figures as a dict."""
    name = f"vmodlambda-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        r = subprocess.run(["ip", "netns", "exec", name, sys.executable, os.path.abspath(__file__),
                            "--inside"], capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"fault run failed ({r.returncode}):\n{r.stdout[-4000:]}\n"
                               f"{r.stderr[-6000:]}")
        return json.loads(r.stdout.strip().splitlines()[-1])
    finally:
        # Whatever still runs in the namespace was started by this run (a run that timed out
        # leaves its varnishd there): ended by pid, then the namespace goes.
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout
        for pid in pids.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


# ------------------------------------------------------------------------------------------------
# Inside the namespace

def sh(*cmd, check=True):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stdout}{r.stderr}")
    return r


def has_netem() -> bool:
    r = sh("tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms", check=False)
    if r.returncode == 0:
        sh("tc", "qdisc", "del", "dev", "lo", "root", check=False)
        return True
    return False


class Faults:
    """The faults of the endpoint's traffic, applied and healed inside the namespace."""

    def __init__(self, port: int):
        self.port = port
        self.netem = has_netem()
        self.mode = "healthy"       # what the endpoint itself does (delay, trickle)

    def mechanism(self, fault: str) -> str:
        return {
            "delay": "the endpoint waits 0.2-2 s before it answers",
            "loss": "nftables: 30% of packets to/from the port dropped (numgen random)",
            "trickle": f"the endpoint sends one byte every {TRICKLE:g} s",
            "reset": ("nftables: half the connections refused with a tcp reset; the endpoint "
                      "resets the others (SO_LINGER 0) 0.3 s into the call"),
            "blackhole": "nftables: packets to/from the port dropped",
        }[fault]

    def _nft(self, *rules: str):
        script = [f"add table inet {NFT_TABLE}",
                  f"add chain inet {NFT_TABLE} out {{ type filter hook output priority 0 ; }}"]
        script += [f"add rule inet {NFT_TABLE} out {r}" for r in rules]
        r = subprocess.run(["nft", "-f", "-"], input="\n".join(script) + "\n", capture_output=True,
                           text=True)
        if r.returncode != 0:
            raise RuntimeError(f"nft: {r.stderr}")

    def apply(self, fault: str):
        p = self.port
        if fault == "delay":
            self.mode = "delay"
        elif fault == "loss":
            self._nft(f"tcp dport {p} numgen random mod 100 < 30 drop",
                      f"tcp sport {p} numgen random mod 100 < 30 drop")
        elif fault == "trickle":
            self.mode = "trickle"
        elif fault == "reset":
            # Half the connections refused with a reset, the other half reset mid-call (route()).
            self._nft(f"tcp dport {p} tcp flags & (syn | ack) == syn numgen random mod 2 == 0 "
                      "reject with tcp reset")
            self.mode = "reset"
        elif fault == "blackhole":
            self._nft(f"tcp dport {p} drop", f"tcp sport {p} drop")
        else:
            raise ValueError(fault)

    def heal(self):
        self.mode = "healthy"
        sh("nft", "delete", "table", "inet", NFT_TABLE, check=False)


MAIN_VCL = """vcl 4.1;
import lambda;
backend default none;

sub vcl_init {
%(objects)s
}

sub vcl_recv {
    if (req.url == "/status") { return (synth(200, "status")); }
    if (req.url ~ "^/invoke/") { return (synth(200, "invoke")); }
%(routes)s
    return (synth(404));
}

sub vcl_backend_response { set beresp.uncacheable = true; return (deliver); }

sub vcl_synth {
    if (resp.reason == "status") {
        set resp.http.X-Status = lambda.status();
        return (deliver);
    }
    if (resp.reason == "invoke") {
%(invokes)s
        return (deliver);
    }
}
"""


def main_vcl(endpoint: str) -> str:
    objects, routes, invokes = [], [], []
    for t in TRANSPORTS:
        for kind in ("fn", "inv"):
            objects.append(f'    new {kind}_{t} = lambda.backend("{kind}", "us-east-1", '
                           f'endpoint_url = "{endpoint}", timeout = {TIMEOUT:g}s, '
                           f'transport = "{t}", pool_size = {MAIN_POOL});')
        routes.append(f'    if (req.url ~ "^/fetch/{t}/") {{ set req.backend_hint = fn_{t}.backend(); '
                      'return (pass); }')
        invokes.append(f'        if (req.url ~ "^/invoke/{t}/") {{ set resp.http.X-Result = '
                       f'inv_{t}.invoke(req.url, fallback = "FALLBACK"); }}')
    return MAIN_VCL % {"objects": "\n".join(objects), "routes": "\n".join(routes),
                       "invokes": "\n".join(invokes)}


def discard_vcl(endpoint: str, n: int) -> str:
    """n probed objects (boto3: a poke holds a worker) whose pokes stay stuck DISCARD_TIMEOUT."""
    lines = ["vcl 4.1;", "import lambda;", "backend default none;",
             f"probe stuck {{ .url = \"/\"; .interval = 1s; .timeout = {DISCARD_TIMEOUT:g}s; "
             ".initial = 0; }",
             "sub vcl_init {"]
    for i in range(n):
        lines.append(f'    new d{i} = lambda.backend("d{i}", "us-east-1", endpoint_url = "{endpoint}", '
                     f'timeout = {DISCARD_TIMEOUT:g}s, transport = "boto3", pool_size = 4, '
                     'probe = stuck);')
    lines += ["}", "sub vcl_recv {", "    set req.backend_hint = d0.backend();", "}"]
    return "\n".join(lines) + "\n"


def child_pid(v) -> int:
    out = sh("pgrep", "-P", str(v.proc.pid)).stdout.split()
    return int(out[0])


def usage(pid: int) -> tuple:
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    threads = len(os.listdir(f"/proc/{pid}/task"))
    return fds, threads


TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
              6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING"}


def fd_inventory(pid: int) -> list:
    """What the child's descriptors are: files by path, TCP sockets by ports and state."""
    tcp = {}
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                next(f)
                for line in f:
                    x = line.split()
                    tcp[x[9]] = (f"tcp {int(x[1].split(':')[1], 16)}->{int(x[2].split(':')[1], 16)} "
                                 f"{TCP_STATES.get(int(x[3], 16), x[3])}")
        except OSError:
            pass
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        m = re.match(r"socket:\[(\d+)\]", target)
        out.append(tcp.get(m.group(1), target) if m else target)
    return sorted(out)


def pool_threads(v) -> int:
    _, headers, _ = v.request("/status")
    m = re.search(r"threads=(\d+) ", dict(headers).get("X-Status", ""))
    return int(m.group(1)) if m else -1


def timed_request(url: str) -> tuple:
    t0 = time.monotonic()
    req = urllib.request.Request(url, headers={"Connection": "close"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, result = r.status, r.headers.get("X-Result", "")
            r.read()
    except urllib.error.HTTPError as e:
        status, result = e.code, ""
        e.read()
    except OSError as e:
        status, result = 0, type(e).__name__
    return time.monotonic() - t0, status, result


def load(v, paths: list, concurrency: int) -> list:
    """Each path once, concurrency at a time: [(path, seconds, status, X-Result)]."""
    out, lock, todo = [], threading.Lock(), list(paths)

    def run():
        while True:
            with lock:
                if not todo:
                    return
                p = todo.pop()
            dt, status, result = timed_request(v.url + p)
            with lock:
                out.append((p, dt, status, result))

    threads = [threading.Thread(target=run) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def healthy_batch(v, transport: str):
    load(v, [f"/fetch/{transport}/h{i}" for i in range(8)]
         + [f"/invoke/{transport}/h{i}" for i in range(8)], 8)


def settle(v, pid: int, want: tuple, limit: float) -> tuple:
    """The child's descriptors and threads outside the worker pool (whose size follows the work:
    a worker is one thread and one eventfd), polled until they are back to want or limit passes."""
    end = time.monotonic() + limit
    while True:
        pool = pool_threads(v)
        fds, threads = usage(pid)
        got = (fds - pool, threads - pool)
        if (got[0] <= want[0] and got[1] <= want[1]) or time.monotonic() >= end:
            return got
        time.sleep(0.2)


def run_inside(n: int) -> dict:
    from support.fake_lambda import Action, FakeLambda
    from support.varnish_harness import Varnishd

    sh("ip", "link", "set", "lo", "up")
    rnd = random.Random(17)
    state = {}

    def route(name, event):
        mode = state["faults"].mode
        payload = (b'{"statusCode":200,"headers":{"content-type":"text/plain"},"body":"ok"}'
                   if name == "fn" else b"INVOKED")
        if mode == "trickle":
            return Action("trickle", payload, delay=TRICKLE)
        if mode == "reset":
            time.sleep(0.3)
            return Action("reset")
        if mode == "delay":
            time.sleep(rnd.uniform(0.2, 2.0))
        # Connection: close, so that the child keeps no idle connection between the phases and
        # its descriptors can be compared exactly with the baseline's.
        return Action("payload", payload, headers={"Connection": "close"})

    report = {"n": n, "timeout": TIMEOUT, "deadline": TIMEOUT + MARGIN, "slack": SLACK,
              "kernel": os.uname().release, "faults": [], "discard": {}}
    with FakeLambda(route) as fake:
        port = int(fake.url.rsplit(":", 1)[1])
        faults = state["faults"] = Faults(port)
        report["netem"] = faults.netem
        params = {"thread_pools": 1, "thread_pool_min": 80, "thread_pool_max": 80,
                  "cli_timeout": 120}
        with Varnishd(main_vcl(fake.url), params=params) as v:
            pid = child_pid(v)
            for t in TRANSPORTS:
                healthy_batch(v, t)
            base = settle(v, pid, (0, 0), 0)
            time.sleep(0.5)
            base = settle(v, pid, base, 0)
            base_inv, base_pool = fd_inventory(pid), pool_threads(v)
            report["baseline"] = {"fds_outside_pool": base[0], "threads_outside_pool": base[1],
                                  "fds": usage(pid)[0],
                                  "threads": usage(pid)[1]}
            for fault in [f for f in os.environ.get("NETNS_FAULTS", ",".join(FAULTS)).split(",") if f]:
                for t in TRANSPORTS:
                    paths = ([f"/fetch/{t}/{fault}{i}" for i in range(n)]
                             + [f"/invoke/{t}/{fault}{i}" for i in range(n)])
                    faults.apply(fault)
                    try:
                        res = load(v, paths, 10)
                    finally:
                        faults.heal()
                    healthy_batch(v, t)
                    got = settle(v, pid, base, 5.0)
                    extra = collections.Counter(fd_inventory(pid))
                    extra.subtract(collections.Counter(base_inv))
                    extra["anon_inode:[eventfd]"] -= pool_threads(v) - base_pool   # workers'

                    times = [r[1] for r in res]
                    ok = [r for r in res if r[2] == 200 and r[3] != "FALLBACK"]
                    report["faults"].append({
                        "fault": fault, "transport": t, "mechanism": faults.mechanism(fault),
                        "sent": len(res),
                        "within": sum(1 for x in times if x <= TIMEOUT + MARGIN + SLACK),
                        "answered_ok": len(ok),
                        "failed_or_fallback": len(res) - len(ok),
                        "no_answer": sum(1 for r in res if r[2] == 0),
                        "max_s": round(max(times), 3),
                        "slowest": sorted((round(r[1], 3), r[0], r[2]) for r in res)[-3:],
                        "overshoot_ms": round(max(0.0, max(times) - TIMEOUT - MARGIN) * 1000),
                        "leaked_fds": got[0] - base[0],
                        "leaked_threads": got[1] - base[1],
                        "fds_not_in_baseline": sorted(k for k, c in extra.items() if c > 0),
                    })
            report["discard"] = discard_phase(v, fake.url, faults, pid)
            panic = v.adm("panic.show", check=False)
            report["panics"] = 1 if "Panic at" in panic else 0
            c = v.counters("MGT.child_*")
            report["child_start"] = c.get("MGT.child_start", 0)
            report["child_died"] = c.get("MGT.child_died", 0)
            report["same_child"] = child_pid(v) == pid
    return report


class CliWatch:
    """Pings the child's CLI every 100 ms in the background: the longest wait for an answer."""

    def __init__(self, v):
        self.v, self.longest, self.stop = v, 0.0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            t0 = time.monotonic()
            self.v.adm("ping", check=False, timeout=120)
            self.longest = max(self.longest, time.monotonic() - t0)
            self.stop.wait(0.1)

    def end(self) -> float:
        self.stop.set()
        self.thread.join()
        return self.longest


def discard_phase(v, endpoint: str, faults: Faults, pid: int) -> dict:
    """vcl.discard of a VCL whose objects' calls (probe pokes) are stuck on a blackholed endpoint."""
    before = usage(pid)[1]
    path = os.path.join(v.dir, "stuck.vcl")
    with open(path, "w") as f:
        f.write(discard_vcl(endpoint, DISCARD_OBJECTS))
    os.chmod(path, 0o644)
    faults.apply("blackhole")
    try:
        v.adm("vcl.load", "stuck", path, timeout=60)
        time.sleep(1.0)         # the probes' first pokes are under way, each holding a worker
        stuck_threads = usage(pid)[1]
        watch = CliWatch(v)
        t0 = time.monotonic()
        out = v.adm("vcl.discard", "stuck", check=False, timeout=120)
        cli_s = time.monotonic() - t0
        # The objects are gone once the VCL has no reference left (at once here: no request used
        # it); the CLI keeps being watched until the stuck pokes have ended.
        time.sleep(DISCARD_TIMEOUT + 1)
        ping_s = watch.end()
    finally:
        faults.heal()
    # Once the stuck calls have ended, their workers exit (the pool shrank under them).
    end = time.monotonic() + 8
    while usage(pid)[1] > before and time.monotonic() < end:
        time.sleep(0.2)
    after = usage(pid)[1]
    return {"objects": DISCARD_OBJECTS, "threads_before": before, "threads_stuck": stuck_threads,
            "cli_s": round(cli_s, 3), "cli_answer": out.strip()[:200],
            "longest_ping_s": round(ping_s, 3), "vcl_list": v.adm("vcl.list"),
            "threads_after": after, "threads_leaked": after - before}


# ------------------------------------------------------------------------------------------------
# The report

BEGIN = "<!-- netns-faults: begin (tests/support/netns_faults.py --reliability) -->"
END = "<!-- netns-faults: end -->"


def markdown(r: dict) -> str:
    lines = [BEGIN, "## Network faults: the deadline holds (issue 17)", "",
             f"`python tests/support/netns_faults.py --reliability RELIABILITY.md` (root; run by "
             f"`tests/varnish/test_netns_faults.py` in `make check`): varnishd with the staged build and a "
             f"Lambda endpoint (tests/support/fake_lambda.py) inside a network namespace of the run's own "
             f"(`ip netns add vmodlambda-<pid>`, only its `lo`; kernel {r['kernel']}, netem "
             f"{'present' if r['netem'] else 'absent'}). Objects with timeout = {r['timeout']:g}s, "
             f"so a call's deadline is {r['deadline']:.1f} s; per fault and transport {r['n']} "
             f"backend fetches and {r['n']} invoke() calls (with a fallback), 10 at a time. "
             f"\"within\": the client had its answer (a 200, a 503 or the fallback) within the "
             f"deadline plus {r['slack']:g} s of harness slack; longest and overshoot: the longest "
             f"wait and how far it went past the deadline, on the client's clock (its HTTP exchange "
             f"with varnishd and the loaded machine included); leaked: the child's descriptors and threads (outside the worker pool, "
             f"whose size follows the work) after healing and a healthy batch, against the "
             f"baseline ({r['baseline']['fds']} fds, {r['baseline']['threads']} threads).", "",
             "| fault | how | transport | sent | within | answered ok | failed / fallback | "
             "longest | overshoot | leaked fds | leaked threads |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for f in r["faults"]:
        lines.append(f"| {f['fault']} | {f['mechanism']} | {f['transport']} | {f['sent']} | "
                     f"{f['within']} | {f['answered_ok']} | {f['failed_or_fallback']} | "
                     f"{f['max_s']:.3f} s | {f['overshoot_ms']} ms | {f['leaked_fds']} | "
                     f"{f['leaked_threads']} |")
    for f in r["faults"]:
        if f["leaked_fds"] > 0 or f["leaked_threads"] > 0:
            kinds = collections.Counter(re.sub(r"^tcp \d+->", "tcp ->", k)
                                        for k in f["fds_not_in_baseline"])
            lines += ["", f"Left behind by {f['fault']} ({f['transport']}) after healing: "
                      f"{f['leaked_fds']} descriptors ("
                      + ", ".join(f"{k} x{c}" for k, c in sorted(kinds.items())) + f"), "
                      f"{f['leaked_threads']} threads."]
    d = r["discard"]
    lines += ["", f"Child: panics {r['panics']}, started {r['child_start']} time(s), died "
              f"{r['child_died']} time(s).", "",
              f"`vcl.discard` of a VCL of {d['objects']} probed objects (boto3, timeout and probe "
              f".timeout {DISCARD_TIMEOUT:g}s, so that each poke holds a worker) whose pokes were "
              f"stuck on a blackholed endpoint: the CLI answered in {d['cli_s']:.3f} s, and no "
              f"`ping` waited longer than {d['longest_ping_s']:.3f} s meanwhile; threads "
              f"{d['threads_before']} before, {d['threads_stuck']} while stuck, "
              f"{d['threads_after']} once the calls had ended.", END]
    return "\n".join(lines) + "\n"


def write_section(path: str, text: str):
    with open(path) as f:
        doc = f.read()
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        doc = head + text.rstrip("\n") + rest.split(END, 1)[1]
    else:
        doc = doc.rstrip("\n") + "\n\n" + text
    with open(path, "w") as f:
        f.write(doc)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--inside", action="store_true", help="(internal) run inside the namespace")
    ap.add_argument("-n", type=int, default=int(os.environ.get("NETNS_FAULTS_N", "20")),
                    help="fetches and invoke() calls per fault and transport (20)")
    ap.add_argument("--json", help="write the figures to this file")
    ap.add_argument("--reliability", help="write the section into this markdown file")
    a = ap.parse_args()
    if a.inside:
        print(json.dumps(run_inside(a.n)))
        return
    why = netns_unavailable()
    if why:
        sys.exit(f"netns_faults: {why}")
    os.environ["NETNS_FAULTS_N"] = str(a.n)
    r = run_in_netns()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=1)
    text = markdown(r)
    print(text)
    if a.reliability:
        write_section(a.reliability, text)


if __name__ == "__main__":
    main()
