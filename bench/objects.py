"""Many objects in one VCL (issue 21): what `vcl.load` of N lambda.backend objects costs a running child.

Starts varnishd with the staged build (tests/varnish_harness.py) serving a plain VCL, then, for each N,
loads a VCL whose vcl_init creates N objects (`lambda.backend("fnI", "us-east-1", endpoint_url = ...)`,
nothing else), as an operator would, and reports the time `vcl.load` took, the child's RSS and threads
after it, and after `vcl.discard`. --cycles C then loads and discards the largest VCL C times and reports
the child's RSS after each discard (RELIABILITY.md). Nothing is invoked: the endpoint is a closed port
on 127.0.0.1.

    .venv/bin/python bench/objects.py --stage /var/tmp/vmod-lambda-test [--counts 1,100,1000]
        [--cycles 20] [--json out.json] [--markdown]
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

BASE_VCL = """vcl 4.1;
backend be none;
sub vcl_recv { return (synth(200, "base")); }
"""


def objects_vcl(n: int, endpoint: str, transport: str = "direct") -> str:
    lines = ["vcl 4.1;", "import lambda;", "backend be none;", "sub vcl_init {"]
    for i in range(n):
        lines.append(f'    new fn{i} = lambda.backend("fn{i}", "us-east-1", '
                     f'endpoint_url = "{endpoint}", transport = "{transport}");')
    lines.append("}")
    lines.append('sub vcl_recv { return (synth(200, "objects")); }')
    return "\n".join(lines) + "\n"


def child_pid(mgt_pid: int) -> int:
    """The varnishd child: the manager's only child process."""
    with open(f"/proc/{mgt_pid}/task/{mgt_pid}/children") as f:
        pids = [int(p) for p in f.read().split()]
    if len(pids) != 1:
        raise RuntimeError(f"expected one child of varnishd {mgt_pid}, found {pids}")
    return pids[0]


def child_usage(pid: int) -> dict:
    """RSS (MB) and threads of a process, from /proc/PID/status."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                out["rss_mb"] = round(int(line.split()[1]) / 1024, 1)
            elif line.startswith("Threads:"):
                out["threads"] = int(line.split()[1])
    return out


def mgt_counter(v, name: str) -> int:
    return int(v.counters(name).get(name, 0))


def load(v, name: str, path: str) -> float:
    t0 = time.monotonic()
    v.adm("vcl.load", name, path)
    return time.monotonic() - t0


def settle(pid: int, seconds: float = 1.0) -> dict:
    """The child's usage once workers told to exit are gone."""
    time.sleep(seconds)
    return child_usage(pid)


def run(counts, cycles: int, transport: str, params: dict) -> dict:
    from varnish_harness import Varnishd
    endpoint = "http://127.0.0.1:9"        # discard port: nothing listens, nothing is sent
    results = {"counts": [], "cycles": [], "transport": transport}
    with Varnishd(BASE_VCL, params=params) as v:
        pid = child_pid(v.proc.pid)
        # The interpreter starts with the first VCL that imports the VMOD: started here, so that
        # every N below measures objects, not Python's start.
        warm = os.path.join(v.dir, "warm.vcl")
        with open(warm, "w") as f:
            f.write(objects_vcl(1, endpoint, transport))
        os.chmod(warm, 0o644)
        t_first = load(v, "warm", warm)
        v.adm("vcl.discard", "warm")
        base = settle(pid)
        results["first_load_s"] = round(t_first, 2)
        results["base"] = base
        print(f"python started: first vcl.load {t_first:.2f} s; child {base}", flush=True)
        for n in counts:
            path = os.path.join(v.dir, f"objects{n}.vcl")
            with open(path, "w") as f:
                f.write(objects_vcl(n, endpoint, transport))
            os.chmod(path, 0o644)
            before = child_usage(pid)
            t = load(v, f"o{n}", path)
            after = settle(pid)
            v.adm("vcl.discard", f"o{n}")
            discarded = settle(pid, 2.0)
            row = {"objects": n, "load_s": round(t, 3), "rss_before_mb": before["rss_mb"],
                   "rss_mb": after["rss_mb"], "threads": after["threads"],
                   "rss_per_object_kb": round((after["rss_mb"] - before["rss_mb"]) * 1024 / n, 1),
                   "rss_discarded_mb": discarded["rss_mb"],
                   "threads_discarded": discarded["threads"]}
            results["counts"].append(row)
            print(json.dumps(row), flush=True)
        if cycles:
            n = max(counts)
            path = os.path.join(v.dir, f"objects{n}.vcl")
            for c in range(cycles):
                t = load(v, f"c{c}", path)
                loaded = child_usage(pid)
                v.adm("vcl.discard", f"c{c}")
                after = settle(pid, 1.0)
                row = {"cycle": c + 1, "objects": n, "load_s": round(t, 3),
                       "rss_loaded_mb": loaded["rss_mb"], "threads_loaded": loaded["threads"],
                       "rss_discarded_mb": after["rss_mb"], "threads": after["threads"]}
                results["cycles"].append(row)
                print(json.dumps(row), flush=True)
        status, _, body = v.request("/")
        results["serves"] = (status, body.decode(errors="replace"))
        results["child_died"] = mgt_counter(v, "MGT.child_died")
        results["child_panic"] = mgt_counter(v, "MGT.child_panic")
        results["child_pid_unchanged"] = child_pid(v.proc.pid) == pid
    return results


def markdown(res: dict) -> str:
    out = ["| objects | vcl.load | child RSS after | per object | child threads | RSS after discard "
           "| threads after discard |", "|---|---|---|---|---|---|---|"]
    for r in res["counts"]:
        out.append(f"| {r['objects']:,} | {r['load_s']:.2f} s | {r['rss_mb']:.0f} MB | "
                   f"{r['rss_per_object_kb']:.0f} KB | {r['threads']} | "
                   f"{r['rss_discarded_mb']:.0f} MB | {r['threads_discarded']} |")
    if res["cycles"]:
        out += ["", "| cycle | vcl.load | RSS loaded | RSS after discard | threads after discard |",
                "|---|---|---|---|---|"]
        for r in res["cycles"]:
            out.append(f"| {r['cycle']} | {r['load_s']:.2f} s | {r['rss_loaded_mb']:.0f} MB | "
                       f"{r['rss_discarded_mb']:.1f} MB | {r['threads']} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", default=os.environ.get("VMOD_LAMBDA_STAGE",
                                                      "/var/tmp/vmod-lambda-test"))
    ap.add_argument("--counts", default="1,100,1000")
    ap.add_argument("--cycles", type=int, default=0)
    ap.add_argument("--transport", default="direct", choices=("direct", "boto3"))
    ap.add_argument("--cli-timeout", type=int, default=None,
                    help="varnishd's cli_timeout (default: varnishd's own, 60 s)")
    ap.add_argument("--json")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    os.environ["VMOD_LAMBDA_STAGE"] = args.stage
    params = {"cli_timeout": args.cli_timeout} if args.cli_timeout else {}
    res = run([int(c) for c in args.counts.split(",")], args.cycles, args.transport, params)
    print(f"serves: {res['serves']}; MGT.child_died {res['child_died']}, MGT.child_panic "
          f"{res['child_panic']}, same child: {res['child_pid_unchanged']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    if args.markdown:
        print(markdown(res))
    ok = res["child_died"] == 0 and res["child_panic"] == 0 and res["child_pid_unchanged"]
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
