"""Three varnishd running examples/cluster/ (shard director, each node edge and owner) in front of ONE
local Lambda endpoint: one invocation per URL across the cluster, failover when a node stops, and the
URLs' invocations spread over the owners (docs/CLUSTER.md records the figures this test prints)."""

import collections
import os
import re
import socket
import tempfile
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from lambda_emulator import Emulator, FunctionConfig
from support import HANDLERS, ROOT
from support.http_helpers import raw_request
from support.varnish_harness import Varnishd, require_stage

EXAMPLE = os.path.join(ROOT, "examples", "cluster")
NODES = ("node1", "node2", "node3")


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def site_vcl(ports, endpoint):
    """examples/cluster/site.vcl for three nodes on 127.0.0.1 and the emulator: the same probe,
    acl and vcl_init, only the addresses and the endpoint differ."""
    with open(os.path.join(EXAMPLE, "site.vcl")) as f:
        text = f.read()
    for i, port in enumerate(ports, 1):
        text, n = re.subn(rf'backend node{i} {{ \.host = "[^"]+"; \.port = "[^"]+";',
                          f'backend node{i} {{ .host = "127.0.0.1"; .port = "{port}";', text)
        assert n == 1, f"site.vcl: backend node{i} not found"
    text, n = re.subn(r'acl cluster_peers \{[^}]*\}', 'acl cluster_peers { "127.0.0.1"; }', text)
    assert n == 1
    text, n = re.subn(r'lambda\.backend\("my-app", "us-east-1",',
                      f'lambda.backend("app", "us-east-1", endpoint_url = "{endpoint}",', text)
    assert n == 1
    return text


def http_get(port, path):
    """(status, X-Cluster-Owner, body) of one GET on a fresh connection."""
    status, headers, body, _ = raw_request(
        port, f"GET {path} HTTP/1.1\r\nHost: cluster.test\r\nConnection: close\r\n\r\n".encode())
    owner = {k.strip().lower(): v for k, v in headers}.get(b"x-cluster-owner")
    return status, None if owner is None else owner.decode("latin-1"), body


def wait_all_healthy(nodes, names, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        views = {n: v.adm("backend.list") for n, v in nodes.items()}
        if all(re.search(rf"^\S*\b{peer}\s.*\bhealthy\b", out, re.M)
               for out in views.values() for peer in names):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"nodes do not see each other healthy: {views}")
        time.sleep(0.2)


class Invocations:
    """The function's own record: one line per invocation, the path."""

    def __init__(self, path):
        self.path = path

    def per_url(self):
        with open(self.path) as f:
            return collections.Counter(line.rstrip("\n") for line in f)

    def total(self):
        return sum(self.per_url().values())


@pytest.fixture(scope="module")
def cluster():
    require_stage()
    tmp = tempfile.mkdtemp(prefix="vmod-lambda-cluster-")
    log = os.path.join(tmp, "invocations.log")
    open(log, "w").close()
    emu = Emulator({"app": FunctionConfig("handlers_cluster:page", timeout=10,
                                          reserved_concurrency=40,
                                          environment={"CLUSTER_LOG": log})},
                   paths=[HANDLERS])
    emu.start()
    with open(os.path.join(EXAMPLE, "cluster.vcl")) as f:
        main = f.read()
    ports = free_ports(3)
    site = site_vcl(ports, emu.url)
    nodes = {}
    try:
        for name, port in zip(NODES, ports):
            nodes[name] = Varnishd(main, listen=f"127.0.0.1:{port}", args=("-i", name),
                                   files={"site.vcl": site})
        wait_all_healthy(nodes, NODES)
        yield nodes, dict(zip(NODES, ports)), Invocations(log), emu
    finally:
        for v in nodes.values():
            v.stop()
        emu.stop()


def spread(ports, paths, workers):
    """GET every path, the i-th on node i mod 3, `workers` at a time; results in order."""
    order = list(ports.values())
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda ip: http_get(order[ip[0] % len(order)], ip[1]),
                             enumerate(paths)))


def test_cluster_invokes_once_per_url_fails_over_and_spreads_owners(cluster):
    nodes, ports, invocations, emu = cluster

    # 1. 300 concurrent requests for one cacheable URL, 100 on each node: one invocation.
    start = threading.Barrier(300)

    def one(i):
        start.wait()
        return http_get(list(ports.values())[i % 3], "/slow/one")

    with ThreadPoolExecutor(300) as pool:
        results = list(pool.map(one, range(300)))
    assert [r[0] for r in results] == [200] * 300
    assert {r[2] for r in results} == {b"page /slow/one"}
    owners = {r[1] for r in results}
    assert len(owners) == 1, owners
    owner = owners.pop()
    assert owner in NODES
    assert invocations.per_url() == {"/slow/one": 1}
    assert emu.stats()["invocations"]["app"] == 1
    fetches = {n: v.counters("lambda.app.fetch").get("lambda.app.fetch", 0) for n, v in nodes.items()}
    assert fetches[owner] == 1 and sum(fetches.values()) == 1, fetches
    print(f"\ncluster: 300 concurrent requests for one URL over 3 nodes: "
          f"{invocations.total()} invocation (owner {owner})")

    # 2. 100 URLs, each requested once on every node (300 requests): each invoked once, by its owner.
    paths = [f"/page/{i}" for i in range(100)]
    results = spread(ports, [p for p in paths for _ in range(3)], workers=12)
    assert all(r[0] == 200 for r in results), (
        [r[:2] for r in results if r[0] != 200][:5],
        {n: subprocess.run(["varnishlog", "-d", "-n", v.workdir, "-i", "FetchError,VCL_Log,BackendOpen"],
                           capture_output=True, text=True).stdout[-3000:] for n, v in nodes.items()})
    per_url = invocations.per_url()
    assert all(per_url[p] == 1 for p in paths), {p: per_url[p] for p in paths if per_url[p] != 1}
    owner_of = {}
    for p, r in zip([p for p in paths for _ in range(3)], results):
        assert owner_of.setdefault(p, r[1]) == r[1], f"{p}: two owners"
    split = collections.Counter(owner_of.values())
    fetches = {n: v.counters("lambda.app.fetch").get("lambda.app.fetch", 0) for n, v in nodes.items()}
    assert sum(split.values()) == 100 and set(split) <= set(NODES)
    assert all(split[n] > 0 for n in NODES), split    # every owner takes a share
    assert sum(fetches.values()) == 101, fetches
    print(f"cluster: 100 URLs x 3 nodes = 300 requests: {sum(per_url[p] for p in paths)} invocations, "
          f"by owner {dict(sorted(split.items()))} (lambda.app.fetch per node {fetches})")

    # 3. Stop the owner of /slow/one: the two others still serve it, at most one more invocation;
    # and URLs that the stopped node owned are served at once (a retry on the next node on the
    # ring before the probes notice) and invoked once each.
    before = invocations.total()
    nodes[owner].stop()
    survivors = {n: p for n, p in ports.items() if n != owner}
    t0 = time.monotonic()
    results = spread(survivors, ["/slow/one"] * 100, workers=100)
    assert [r[0] for r in results] == [200] * 100
    assert {r[2] for r in results} == {b"page /slow/one"}
    assert invocations.per_url()["/slow/one"] <= 2
    after = [f"/after/{i}" for i in range(30)]
    results = spread(survivors, [p for p in after for _ in range(2)], workers=12)
    failover_s = time.monotonic() - t0
    assert [r[0] for r in results] == [200] * 60
    assert {r[1] for r in results} <= set(survivors), "the stopped node cannot own anything"
    per_url = invocations.per_url()
    assert all(per_url[p] == 1 for p in after), {p: per_url[p] for p in after}
    moved = collections.Counter(r[1] for r in results[::2])
    print(f"cluster: {owner} stopped: 100 requests for /slow/one on the other two: "
          f"{per_url['/slow/one'] - 1} more invocation(s); 30 new URLs x 2 nodes: "
          f"{sum(per_url[p] for p in after)} invocations, by owner {dict(sorted(moved.items()))}; "
          f"no client error ({failover_s:.1f} s in all)")
    for n in survivors:
        assert not nodes[n].panicked()
    assert invocations.total() == before + (per_url["/slow/one"] - 1) + len(after)
