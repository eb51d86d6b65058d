#!/usr/bin/env python3
"""Profile the varnishd child during a Lambda-backend pass run: py-spy (Python stacks of the worker
threads, GIL-holding samples only with --gil) and perf (whole child, C included), summarised as the
top functions by own and cumulative samples.

    python bench/profile.py [--stage DIR] [--duration 10] [--path /lambda/pass/x] [--out FILE]

Uses the same origin, VCL and varnishd as bench/run.py.
"""

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run as bench  # noqa: E402


def pyspy_summary(raw_path, top=30):
    """Own and cumulative sample counts per function from py-spy's collapsed stacks."""
    own, cum = collections.Counter(), collections.Counter()
    total = 0
    with open(raw_path) as f:
        for line in f:
            stack, _, n = line.rstrip().rpartition(" ")
            n = int(n)
            total += n
            frames = stack.split(";")
            own[frames[-1]] += n
            for fr in set(frames):
                cum[fr] += n
    lines = [f"py-spy: {total} samples"]
    lines.append("-- own (self) samples, top %d" % top)
    lines += [f"{n * 100.0 / total:6.1f}%  {fr}" for fr, n in own.most_common(top)]
    lines.append("-- cumulative samples, top %d" % top)
    lines += [f"{n * 100.0 / total:6.1f}%  {fr}" for fr, n in cum.most_common(top)]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stage", default=os.environ.get("STAGE", "/var/tmp/vmod-lambda-test"))
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--path", default="/lambda/pass/x")
    ap.add_argument("--gil", action="store_true", help="py-spy: only samples holding the GIL")
    ap.add_argument("--perf", action="store_true", help="also perf record the child (slow report)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    pyspy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    from vmod_lambda import config as vconfig
    import inspect
    has_transport = "transport" in inspect.signature(vconfig.validate_backend).parameters
    fast = getattr(vconfig, "DEFAULT_TRANSPORT", "boto3")
    workdir = tempfile.mkdtemp(prefix="vmod-lambda-profile-")
    ng = v = None
    report = []
    try:
        ng = bench.Nginx(workdir)
        v = bench.Varnish(workdir, args.stage, bench.vcl(ng.port, has_transport, fast))
        child = v.child_pid()
        bench.wrk(v.url + args.path, 32, 2)
        raw = os.path.join(workdir, "pyspy.txt")
        perf_data = os.path.join(workdir, "perf.data")
        res = {}
        t = threading.Thread(target=lambda: res.update(bench.wrk(v.url + args.path, 32,
                                                                 args.duration + 2)))
        t.start()
        procs = []
        cmd = [pyspy, "record", "--pid", str(child), "--duration", str(args.duration),
               "--rate", "200", "--format", "raw", "--output", raw, "--nonblocking"]
        if args.gil:
            cmd.append("--gil")
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        if args.perf and shutil.which("perf"):
            procs.append(subprocess.Popen(
                ["perf", "record", "-F", "199", "-p", str(child), "-o", perf_data, "--",
                 "sleep", str(args.duration)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for p in procs:
            p.wait()
        t.join()
        report.append(f"wrk {args.path}: {res.get('rps', 0):.0f} req/s during profiling "
                      f"(transport {fast})")
        if os.path.exists(raw):
            report.append(pyspy_summary(raw))
        else:
            report.append("py-spy produced nothing: " + procs[0].stderr.read().decode()[-500:])
        if os.path.exists(perf_data):
            r = subprocess.run(["perf", "report", "-i", perf_data, "--no-children", "--sort",
                                "dso,sym", "--stdio", "--percent-limit", "0.7"],
                               capture_output=True, text=True, timeout=300)
            report.append("perf (whole child, self time by shared object and symbol):")
            report += [ln for ln in r.stdout.splitlines() if ln and not ln.startswith("#")][:45]
    finally:
        if v:
            v.stop()
        if ng:
            ng.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    text = "\n".join(report) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
