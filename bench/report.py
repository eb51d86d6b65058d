#!/usr/bin/env python3
"""BENCHMARKS.md and bench/results/benchmarks.png from a results file of bench/run.py; prints the
ratios against the targets of issue 5.

    python bench/report.py [bench/results/<stamp>.json]      (default: the newest)
"""

import glob
import json
import os
import re
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# bench/results/ is a local scratch directory (.gitignore); what BENCHMARKS.md shows is committed
# beside it: the chart and a copy of the results file it was made from.
CHART = os.path.join(HERE, "benchmarks.png")
DATA = os.path.join(HERE, "benchmarks.json")
DOC = os.path.join(ROOT, "BENCHMARKS.md")
PROFILE = os.path.join(HERE, "results", "profile.txt")


def newest():
    # Only the files bench/run.py names itself (<UTC stamp>.json): a partial run saved under another
    # name (--json bench/results/k-1727.json) is not a `make bench` run.
    files = sorted(f for f in glob.glob(os.path.join(HERE, "results", "*.json"))
                   if re.fullmatch(r"\d{8}T\d{6}Z\.json", os.path.basename(f)))
    if not files:
        if os.path.exists(DATA):
            return DATA
        sys.exit("bench/report.py: no results in bench/results: run `make bench`")
    return files[-1]


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, digits=0):
    if x is None:
        return "-"
    return f"{x:,.{digits}f}"


def summarize(runs):
    """case id -> summary over its rounds."""
    out = {}
    for r in runs:
        out.setdefault(r["case"], []).append(r)
    summary = {}
    for cid, rs in out.items():
        rps = [r["rps"] for r in rs]
        summary[cid] = {
            "label": rs[0]["label"], "group": rs[0]["group"], "connections": rs[0]["connections"],
            "rounds": len(rs), "rps_median": med(rps), "rps_min": min(rps), "rps_max": max(rps),
            "p50_ms": med([r["p50_ms"] for r in rs]), "p99_ms": med([r["p99_ms"] for r in rs]),
            "cpu_ms": med([r["varnishd_cpu_ms_per_req"] for r in rs]),
            "origin_cpu_ms": med([r["origin_cpu_ms_per_req"] for r in rs]),
            "ctxsw": med([r.get("varnishd_ctx_switches_per_req") for r in rs]),
            "peak_rss_mb": max(r["peak_rss_kb"] or 0 for r in rs) / 1024.0,
            "rss_growth_mb": max((r["peak_rss_kb"] or 0) - (r["rss_before_kb"] or 0)
                                 for r in rs) / 1024.0,
            "rss_after_mb": [(r["rss_after_kb"] or 0) / 1024.0 for r in rs],
            "invocations": sum(r["origin_invocations"] for r in rs),
            "requests": sum(r["requests"] for r in rs),
            "errors": sum(r["errors"] for r in rs),
            "load": med([r["loadavg_after"][0] for r in rs]),
            "load_max": max(r["loadavg_after"][0] for r in rs),
        }
    return summary


def client_summary(rows):
    out = {}
    for r in rows:
        out.setdefault((r["transport"], r["threads"]), []).append(r)
    return {k: {"rps_median": med([r.get("rps") for r in v]),
                "rps_min": min((r.get("rps") or 0) for r in v),
                "cpu_ms": med([r.get("cpu_ms_per_req") for r in v]),
                "load": med([r["loadavg_after"][0] for r in v]),
                "errors": sum(r.get("errors", 0) for r in v),
                "failed": [r["error"] for r in v if "error" in r]}
            for k, v in out.items()}


def stream_summary(rows, keys):
    """case id -> {label, runs, key: (min, median, max)} over its runs."""
    by = {}
    for r in rows:
        by.setdefault(r["case"], []).append(r)
    out = {}
    for cid, rs in by.items():
        d = {"label": rs[0]["label"], "runs": len(rs), "status": sorted({r["status"] for r in rs}),
             "bytes": sorted({r["bytes"] for r in rs}),
             "load": med([r["loadavg_after"][0] for r in rs])}
        for k in keys:
            xs = [r.get(k) for r in rs if r.get(k) is not None]
            d[k] = (min(xs), statistics.median(xs), max(xs)) if xs else (None, None, None)
        out[cid] = d
    return out


def stream_targets(fb, tp):
    rows = []
    st, bu, na = (fb.get(k) for k in ("s_stream_trickle", "s_buffered_trickle", "s_native_trickle"))
    if st and bu:
        rows.append(("first byte through varnishd, function writing for ~1 s: streaming / "
                     "buffered backend (median)",
                     f"{fmt(st['first_byte_ms'][1], 1)} ms / {fmt(bu['first_byte_ms'][1], 1)} ms"
                     + (f" (native: {fmt(na['first_byte_ms'][1], 1)} ms)" if na else ""),
                     "(information)", None))
    t = tp.get("t_stream_big")
    if t:
        n, e = tp.get("t_native_big"), tp.get("t_emulator_direct")
        rows.append((f"streamed {BIG_MIB} MiB through varnishd (pass), lambda streaming = true",
                     f"{fmt(t['mb_per_s'][1])} MB/s median (emulator alone "
                     f"{fmt(e['mb_per_s'][1]) if e else '-'}, native "
                     f"{fmt(n['mb_per_s'][1]) if n else '-'}); child peak RSS growth "
                     f"{fmt(t['rss_growth_mb'][2], 1)} MB max", "(information)", None))
    return rows


BIG_MIB = 100


def targets(res, s):
    """[(name, measured text, target text, met: bool|None)]."""
    rows = []

    per_round = {}
    for run in res.get("runs", []):
        per_round.setdefault(run["case"], {})[run["round"]] = run["rps"]

    def ratio(a, b):
        """The median over rounds of a's rate / b's rate in the same round (the two cases run
        back to back in every round, so a load drift between rounds cancels out), and the
        per-round ratios."""
        ra, rb = per_round.get(a, {}), per_round.get(b, {})
        rs = [ra[k] / rb[k] for k in sorted(ra) if k in rb and rb[k]]
        return (statistics.median(rs), rs) if rs else (None, [])

    def shown(r, rs, digits):
        if r is None:
            return "-"
        return f"{r:.{digits}f} (rounds: {', '.join(f'{x:.{digits}f}' for x in rs)})"

    fast = res.get("default_transport", "boto3")
    for a, b, name, digits, want in (
            ("b_lambda_pass", "a_native_pass", f"lambda backend pass ({fast}) / native pass", 2,
             0.5),
            ("b_boto3_pass", "a_native_pass", "lambda backend pass (boto3) / native pass", 2, None),
            ("c_invoke", "a_native_pass", f"invoke() + synth ({fast}) / native pass", 2, 0.5),
            ("c_boto3_invoke", "a_native_pass", "invoke() + synth (boto3) / native pass", 2, None),
            ("d_lambda_hit", "d_native_hit", "lambda-backed hits / native-backed hits", 3, 0.95),
            # k (issue 23): the same pass and invoke() through an https:// and an http:// endpoint
            ("k_https_pass", "k_http_pass", "lambda pass, https:// / http:// endpoint", 2, 0.90),
            ("k_https_invoke", "k_http_invoke", "invoke() + synth, https:// / http:// endpoint",
             2, None),
            # m, n (issue 17): 1 MiB bodies against a native pass of the same bytes
            ("m_lambda_1m_text", "m_native_1m_text",
             f"1 MiB text body, lambda pass ({fast}) / native pass", 2, 0.50),
            ("n_lambda_1m_bin", "n_native_1m_bin",
             f"1 MiB binary body (base64 in the payload), lambda pass ({fast}) / native pass", 2,
             0.30)):
        r, rs = ratio(a, b)
        if want is None:
            if r is not None:
                rows.append((name, shown(r, rs, digits), "(reference)", None))
            continue
        rows.append((name, shown(r, rs, digits), f">= {want:.2f}", None if r is None else r >= want))

    def cpu_ratio(a, b):
        if a in s and b in s and s[a]["cpu_ms"]:
            return s[b]["cpu_ms"] / s[a]["cpu_ms"]
        return None

    # On a loaded machine throughput follows CPU per request: the same ratios from varnishd's CPU
    # per request (native / Lambda), for information.
    for a, b, name in (("b_lambda_pass", "a_native_pass", f"lambda backend pass ({fast})"),
                       ("c_invoke", "a_native_pass", f"invoke() + synth ({fast})"),
                       ("d_lambda_hit", "d_native_hit", "lambda-backed hits"),
                       ("m_lambda_1m_text", "m_native_1m_text", "1 MiB text body, lambda pass"),
                       ("n_lambda_1m_bin", "n_native_1m_bin", "1 MiB binary body, lambda pass")):
        r = cpu_ratio(a, b)
        if r is not None:
            rows.append((f"{name}: native CPU/req / its CPU/req (varnishd)", fmt(r, 2),
                         "(information)", None))
    if "f_latency" in s and "b_lambda_pass" in s:
        conc = s["f_latency"]["connections"]
        bound = min(conc / 0.1, s["b_lambda_pass"]["rps_median"])
        got = s["f_latency"]["rps_median"] / bound
        rows.append((f"latency-bound ({conc} clients, 100 ms) / min({conc}/0.1 s, "
                     f"CPU-bound pass rate {fmt(s['b_lambda_pass']['rps_median'])})",
                     f"{fmt(s['f_latency']['rps_median'])} of {fmt(bound)} = {got:.0%}", ">= 90%",
                     got >= 0.9))
    for case in ("k_https_pass", "k_https_invoke"):
        runs = [r for r in res.get("runs", []) if r["case"] == case and "tls_handshakes" in r]
        if runs:
            hs = sum(r["tls_handshakes"] for r in runs)
            n = sum(r.get("requests", 0) for r in runs)
            rows.append((f"{case}: TLS handshakes per 1,000 requests (measured runs)",
                         f"{hs * 1000.0 / n if n else 0:.1f} ({hs} in {n:,} requests)",
                         "none per request (keep-alive)", n > 0 and hs * 1000.0 / n < 1.0))
    co = res.get("coalescing", [])
    if co:
        inv = [r["origin_invocations"] for r in co]
        rows.append(("coalescing: invocations per cold URL, 200 clients",
                     ", ".join(str(i) for i in inv), "exactly 1 each", all(i == 1 for i in inv)))
    big = summarize(res.get("big", []))
    if "h_lambda_big" in big:
        b = big["h_lambda_big"]
        n = big.get("h_native_big")
        after = b["rss_after_mb"]
        # Bounded: the peak over the start of a run stays within 4 copies of a body per connection,
        # and the RSS after each run does not keep growing (no leak).
        limit = b["connections"] * 5 * 4
        steady = len(after) < 2 or after[-1] <= after[0] * 1.10 + 16
        rows.append(("5 MB bodies, lambda: child peak RSS growth in a run (native: "
                     f"{fmt(n['rss_growth_mb'] if n else None)} MB)",
                     f"{fmt(b['rss_growth_mb'])} MB; RSS after runs "
                     + " / ".join(fmt(x) for x in after) + " MB",
                     f"<= {limit} MB ({b['connections']} conns x 4 x 5 MB), no growth across runs",
                     b["rss_growth_mb"] <= limit and steady))
    return rows


def issue17_table(res, s, big, tp):
    """Issue 17's table: [(case, before, measured, target, met, CPU text)]. Ratios of rates of cases
    run back to back (per round where the cases have rounds); CPU is the varnishd child's per
    request (per MB for the stream), the Lambda case's and, in brackets, the native one's."""
    per_round = {}
    for run in res.get("runs", []) + res.get("big", []):
        per_round.setdefault(run["case"], {})[run.get("round")] = run["rps"]

    def ratio(a, b):
        ra, rb = per_round.get(a, {}), per_round.get(b, {})
        rs = [ra[k] / rb[k] for k in ra if k in rb and rb[k]]
        return statistics.median(rs) if rs else None

    def cpu(a, b, d=s):
        if a in d and b in d:
            return f"{d[a]['cpu_ms']:.3f} ({d[b]['cpu_ms']:.3f}) ms/req"
        return "-"

    fast = res.get("default_transport", "boto3")
    rows = []
    for a, b, name, before, want, d in (
            ("b_lambda_pass", "a_native_pass", "lambda backend pass / native pass (tiny body)",
             "0.52", 0.80, s),
            ("c_invoke", "a_native_pass", "invoke() + synth / native pass", "0.77", 0.90, s),
            ("m_lambda_1m_text", "m_native_1m_text",
             "1 MiB text body, lambda pass / native pass of the same body", "not measured", 0.50, s),
            ("h_lambda_big", "h_native_big", "5 MB text body, lambda / native", "0.10", 0.30, big),
            ("n_lambda_1m_bin", "n_native_1m_bin",
             "1 MiB binary body (base64 in the payload), lambda / native", "not measured", 0.30, s)):
        r = ratio(a, b)
        rows.append((f"{name} ({fast})", before, "-" if r is None else f"{r:.2f}", f">= {want:.2f}",
                     None if r is None else r >= want, cpu(a, b, d)))
    t, n = tp.get("t_stream_big"), tp.get("t_native_big")
    if t and n and n["mb_per_s"][1]:
        r = t["mb_per_s"][1] / n["mb_per_s"][1]
        rows.append((f"{BIG_MIB} MiB streamed body, lambda streaming / native MB/s", "0.33",
                     f"{r:.2f} ({fmt(t['mb_per_s'][1])} / {fmt(n['mb_per_s'][1])} MB/s)", ">= 0.60",
                     r >= 0.60, f"{fmt(t['varnishd_cpu_ms_per_mb'][1], 2)} "
                     f"({fmt(n['varnishd_cpu_ms_per_mb'][1], 2)}) ms/MB"))
    for a, name in (("b_boto3_pass", "lambda backend pass / native pass, boto3 transport"),
                    ("c_boto3_invoke", "invoke() + synth / native pass, boto3 transport")):
        r = ratio(a, "a_native_pass")
        if r is not None:
            rows.append((name, "(reference)", f"{r:.2f}", "(reference)", None,
                         cpu(a, "a_native_pass")))
    return rows


def chart(s, cl, big, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench/report.py: matplotlib is missing, no chart (bench/setup.sh installs it)")
        return False
    cases = list(s.values()) + list(big.values())
    labels = [c["label"] for c in cases]
    rps = [c["rps_median"] for c in cases]
    lo = [c["rps_median"] - c["rps_min"] for c in cases]
    hi = [c["rps_max"] - c["rps_median"] for c in cases]
    cpu = [c["cpu_ms"] for c in cases]
    for (t, n), c in sorted(cl.items()):
        labels.append(f"client loop outside Varnish: {t}, {n} thread(s)")
        rps.append(c["rps_median"] or 0)
        lo.append((c["rps_median"] or 0) - c["rps_min"])
        hi.append(0)
        cpu.append(c["cpu_ms"])
    colors = ["#4c72b0" if ("native" in lb) else "#dd8452" if ("boto3" in lb) else "#55a868"
              for lb in labels]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 0.42 * len(labels) + 1.5), sharey=True)
    y = list(range(len(labels)))[::-1]
    ax1.barh(y, rps, xerr=[lo, hi], color=colors)
    ax1.set_xscale("log")
    ax1.set_xlabel("requests/s (median of rounds, min-max bars; log scale)")
    ax1.set_yticks(y)
    ax1.set_yticklabels(labels, fontsize=8)
    for yi, v in zip(y, rps):
        ax1.text(v, yi, f" {v:,.0f}", va="center", fontsize=7)
    ax2.barh(y, [c or 0 for c in cpu], color=colors)
    ax2.set_xlabel("CPU ms per request (varnishd child; client loop: its process)")
    for yi, v in zip(y, cpu):
        if v:
            ax2.text(v, yi, f" {v:.3f}", va="center", fontsize=7)
    fig.suptitle("vmod-lambda benchmarks (blue: native, green: lambda default transport, "
                 "orange: lambda boto3)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else newest()
    with open(path) as f:
        res = json.load(f)
    merged_from = None
    if res.get("only") == "streaming" and os.path.exists(DATA) and os.path.abspath(path) != DATA:
        # `run.py --only streaming`: the other sections from the last full run.
        with open(DATA) as f:
            base = json.load(f)
        merged_from = base.get("started")
        for k in ("first_byte", "stream_throughput"):
            base[k] = res[k]
        base["streaming_started"] = res["started"]
        base["streaming_machine"] = res["machine"]
        res = base
    if os.path.abspath(path) != DATA:
        with open(DATA, "w") as f:
            json.dump(res, f, indent=1)
    s = summarize(res["runs"])
    big = summarize(res.get("big", []))
    co = summarize(res.get("coalescing", []))
    cl = client_summary(res.get("client_loop", []))
    m = res["machine"]
    rel = os.path.relpath(path, ROOT)
    has_chart = chart(s, cl, big, CHART)
    for r in res.get("stream_throughput", []):
        if r.get("peak_rss_kb") is not None and r.get("rss_before_kb") is not None:
            r["rss_growth_mb"] = max(0, r["peak_rss_kb"] - r["rss_before_kb"]) / 1024.0
    fb = stream_summary(res.get("first_byte", []), ("head_ms", "first_byte_ms", "total_ms"))
    tp = stream_summary(res.get("stream_throughput", []),
                        ("mb_per_s", "total_ms", "varnishd_cpu_ms_per_mb", "rss_growth_mb"))
    tgt = targets(res, s) + stream_targets(fb, tp)

    L = []
    L.append("# vmod-lambda benchmarks\n")
    L.append(f"Generated by `make bench` (bench/run.py, bench/report.py) from `{rel}` (copied to "
             "`bench/benchmarks.json`): "
             f"{res['rounds']} rounds of {res['duration_s']} s per case, started {res['started']}, "
             f"finished {res.get('finished', '?')}. Default transport of this build: "
             f"`{res.get('default_transport')}` (transports: {', '.join(res.get('transports', []))}).\n")
    L.append("**Load:** the load column below is the 1-minute load average during each case; "
             "wrk, nginx, the emulator and varnishd share the machine's cores, so it includes the "
             "benchmark's own processes (set BENCH_NOTE to say what else ran). Absolute numbers "
             "move between runs; ratios from the same run (cases interleaved round by round) "
             "less so. A ratio of rates is the median over rounds of the two cases' rates in "
             "the same round (they run back to back), the per-round ratios in brackets.\n")
    if os.environ.get("BENCH_NOTE"):
        L.append(f"**Note on this run:** {os.environ['BENCH_NOTE']}\n")
    L.append("## Targets (issue 5)\n")
    L.append("| target | measured | wanted | met |")
    L.append("|---|---|---|---|")
    for name, got, want, ok in tgt:
        L.append(f"| {name} | {got} | {want} | {'-' if ok is None else 'yes' if ok else '**no**'} |")
    L.append("")
    L.append("## Targets of issue 17 (performance round 2)\n")
    L.append("Ratios from this run (cases interleaved round by round, medians); \"before\" is the "
             "figure issue 17 started from. CPU: varnishd child CPU of the Lambda case (native case "
             "in brackets). Where a target is not met, bench/ANALYSIS.md (below) says where the "
             "time goes and what was tried.\n")
    L.append("| case | before | measured | target | met | varnishd CPU, lambda (native) |")
    L.append("|---|---|---|---|---|---|")
    for name, before, got, want, ok, c in issue17_table(res, s, big, tp):
        L.append(f"| {name} | {before} | {got} | {want} | "
                 f"{'-' if ok is None else 'yes' if ok else '**no**'} | {c} |")
    L.append("")
    if has_chart:
        L.append("![benchmarks](bench/benchmarks.png)\n")
    L.append("## Results through Varnish\n")
    L.append("Median over the rounds (min-max of req/s). CPU is the varnishd child's utime+stime "
             "(all its threads, the Python workers included) per request; context switches are "
             "those of all the child's threads (/proc/<child>/task/*/status); origin CPU is nginx's "
             "worker. Invocations are counted in nginx's access log.\n")
    L.append("| case | clients | req/s median (min-max) | p50 ms | p99 ms | varnishd CPU ms/req | "
             "varnishd context switches/req | origin CPU ms/req | peak RSS MB | "
             "origin calls / requests | errors | load 1m |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for cid, c in list(s.items()) + list(co.items()) + list(big.items()):
        L.append(f"| {cid}: {c['label']} | {c['connections']} | {fmt(c['rps_median'])} "
                 f"({fmt(c['rps_min'])}-{fmt(c['rps_max'])}) | {fmt(c['p50_ms'], 2)} | "
                 f"{fmt(c['p99_ms'], 2)} | {fmt(c['cpu_ms'], 3)} | {fmt(c['ctxsw'], 1)} | "
                 f"{fmt(c['origin_cpu_ms'], 3)} | "
                 f"{fmt(c['peak_rss_mb'])} | {c['invocations']:,} / {c['requests']:,} | "
                 f"{c['errors']} | {fmt(c['load'], 2)} |")
    L.append("")
    if fb or tp:
        L.append("## Streaming backends (s, t)\n")
        if merged_from:
            L.append(f"Measured by `bench/run.py --only streaming`, started "
                     f"{res.get('streaming_started')}; the other sections are from the full run "
                     f"started {merged_from}.\n")
        L.append("s: first-byte time through varnishd (pass, one request at a time, a new "
                 "connection each) of a body written as 11 chunks of 1 KiB, one every 100 ms; "
                 "min / median / max over the runs, in ms from sending the request.\n")
        L.append("| case | runs | first body byte ms | response head ms | last byte ms | "
                 "body bytes | status | load 1m |")
        L.append("|---|---|---|---|---|---|---|---|")
        mmm = lambda t, d=1: " / ".join(fmt(x, d) for x in t)       # noqa: E731
        for cid, c in fb.items():
            L.append(f"| {cid}: {c['label']} | {c['runs']} | {mmm(c['first_byte_ms'])} | "
                     f"{mmm(c['head_ms'])} | {mmm(c['total_ms'])} | "
                     f"{', '.join(str(b) for b in c['bytes'])} | "
                     f"{', '.join(str(x) for x in c['status'])} | {fmt(c['load'], 2)} |")
        L.append("")
        L.append(f"t: one {BIG_MIB} MiB body, pass, one client reading as fast as it can; "
                 "min / median / max over the runs. MB/s is 10^6 bytes of body (for the emulator "
                 "alone: of its raw event stream answer) per second of the whole request; CPU is "
                 "the varnishd child's per MB; peak RSS growth is the child's VmHWM (reset before "
                 "each run) minus its RSS before the run. These cases run first, on a fresh "
                 "child, the streaming runs before the native ones (the allocator keeps and reuses "
                 "freed memory, which would hide a later run's growth). A pass body is stored in "
                 "Transient storage as it arrives and freed as it is delivered: nginx sends the "
                 "file faster than the client reads it, so most of it waits in the child (the "
                 "native growth); the streamed fetch is slower than the client reads (its "
                 "MB/s), so little of it waits, and the VMOD itself holds a 256 KB window and "
                 "one event stream frame (see STREAMING in vmod_lambda.vcc).\n")
        L.append("| case | runs | MB/s | seconds | varnishd CPU ms/MB | child peak RSS growth MB "
                 "| bytes | status | load 1m |")
        L.append("|---|---|---|---|---|---|---|---|---|")
        for cid, c in tp.items():
            L.append(f"| {cid}: {c['label']} | {c['runs']} | {mmm(c['mb_per_s'], 0)} | "
                     f"{mmm(tuple(None if x is None else x / 1000 for x in c['total_ms']), 2)} | "
                     f"{mmm(c['varnishd_cpu_ms_per_mb'], 2)} | {mmm(c['rss_growth_mb'], 1)} | "
                     f"{', '.join(str(b) for b in c['bytes'])} | "
                     f"{', '.join(str(x) for x in c['status'])} | {fmt(c['load'], 2)} |")
        L.append("")
    L.append("## The bare client loop, outside Varnish (e)\n")
    L.append("vmod_lambda's Invoker (what the worker threads run) invoking the origin's fixed "
             "function in a loop, in its own process.\n")
    L.append("| transport | threads | invokes/s median (min) | CPU ms per invoke | load 1m |")
    L.append("|---|---|---|---|---|")
    for (t, n), c in sorted(cl.items()):
        note = f" (failed: {c['failed'][0][:80]})" if c["failed"] else ""
        L.append(f"| {t} | {n} | {fmt(c['rps_median'])} ({fmt(c['rps_min'])}) | "
                 f"{fmt(c['cpu_ms'], 3)} | {fmt(c['load'], 2)} |{note}")
    L.append("")
    L.append("## Machine\n")
    loads = [r["loadavg_after"][0] for r in res["runs"] + res.get("big", [])]
    L.append(f"- CPUs (`nproc`): {m.get('nproc')}; CPU: {m.get('cpu')}")
    L.append(f"- kernel {m.get('kernel')}; Debian {m.get('debian')}")
    L.append(f"- {m.get('varnish')}; {m.get('nginx')}; {m.get('wrk')}")
    L.append(f"- Python {m.get('home_python')} in the home (boto3 {m.get('boto3')}, botocore "
             f"{m.get('botocore')}); bench driver Python {m.get('python')}")
    if loads:
        L.append(f"- load average (1 min) after each measurement: min {min(loads):.2f}, median "
                 f"{statistics.median(loads):.2f}, max {max(loads):.2f} (on {m.get('nproc')} CPUs)")
    L.append(f"- varnishd child RSS: {fmt((res.get('varnishd_rss_start_kb') or 0) / 1024)} MB "
             f"after start, {fmt((res.get('varnishd_rss_end_kb') or 0) / 1024)} MB at the end; "
             f"panic: {'yes' if res.get('panicked') else 'no'}")
    L.append("")
    L.append(METHOD)
    if os.path.exists(PROFILE):
        with open(PROFILE) as f:
            prof = f.read().strip()
        L.append("## Profile of a Lambda-backend pass run (`bench/profile.py`)\n")
        L.append("```")
        L.append(prof)
        L.append("```\n")
    # bench/OBJECTS.md: `make bench-objects`'s section (bench/objects.py), kept as it was measured.
    for extra in ("ANALYSIS.md", "OBJECTS.md"):
        if os.path.exists(os.path.join(HERE, extra)):
            with open(os.path.join(HERE, extra)) as f:
                L.append(f.read().strip() + "\n")
    with open(DOC, "w") as f:
        f.write("\n".join(L))

    print(f"bench: ratios ({rel})")
    for name, got, want, ok in tgt:
        print(f"  {'MET ' if ok else 'MISS' if ok is False else '    '}  {name}: {got} (target {want})")
    print(f"bench: wrote {os.path.relpath(DOC, ROOT)}" +
          (f" and {os.path.relpath(CHART, ROOT)}" if has_chart else ""))


METHOD = """## Method

- `make bench` stages the fresh build (`make stage`), installs what the benchmarks need
  (bench/setup.sh: nginx-light, libnginx-mod-http-echo and wrk from Debian; matplotlib and py-spy into
  .venv from bench/requirements.lock), then runs bench/run.py and bench/report.py. `make bench
  BENCH_ARGS="--rounds 5 --duration 10"` changes rounds and durations; `--quick` is a 1-round check.
- Origin: one nginx (1 worker, bench/nginx.conf.in) for every case, on 127.0.0.1. Native cases GET
  `/native/...` (22-byte text body, `Cache-Control: max-age=3600`). Lambda cases POST the Invoke API
  path and get a fixed Lambda response JSON whose body is the same 22 bytes with the same headers, so
  the origin does the same work; the 100 ms function is nginx's echo module (`echo_sleep 0.1`), the
  5 MB bodies a static file (native) and the same text as the body of a Lambda response JSON.
- varnishd: the staged build (VMOD_LAMBDA_HOME and vmod_path as tests/support/varnish_harness.py sets them,
  fake credentials, default jail, `-s malloc,256m`, default thread pools), one VCL routing by URL
  (bench/run.py `vcl()`): `lambda.backend` objects with `pool_size` 64 (320 for the 100 ms function)
  and one with `transport = "boto3"` for each Lambda case so both transports are measured side by side.
- Load: wrk 4.1 (`-t2 --latency --timeout 10s`) on the same machine. a-d: 32 connections on one URL;
  f: 256 connections, each request a new URL (bench/distinct.lua); g: 200 connections on one cold
  cacheable URL of a 100 ms function (a new URL per round); h: 8 connections, pass, 5 MB bodies;
  m, n: 8 connections, pass, 1 MiB bodies against a native pass of the same bytes (m: text lines,
  the JSON string with a `\\n` escape per KiB; n: seeded random bytes, base64 in the payload with
  `isBase64Encoded`); `bench/run.py --only mib` runs only them.
- Rounds: every case once per round, rounds repeated (interleaved, every other round in reverse
  order, so load drifts hit all cases alike);
  one warm-up second per case first. Medians and min-max over rounds.
- Measured per run: wrk's requests/s and latency percentiles; varnishd child CPU from
  /proc/<child>/stat (utime+stime) before/after, per request; the child's peak RSS (VmHWM, reset per
  run through /proc/<child>/clear_refs) and RSS before/after; invocations counted in nginx's access
  log; /proc/loadavg before/after.
- Streaming cases (s, t; `bench/run.py --only streaming`, or `BENCH_ONLY=streaming`, runs only
  them): the origin of their Lambda backends is the product's emulator (`python -m
  lambda_emulator`, its own process) serving bench/stream_handlers.py; the backends have
  `event_format = "2.0"`, `pool_size = 4`, `timeout = 120s`, and `streaming = true` or false.
  s: the function `trickle` writes its first 1 KiB at once, then 1 KiB every 100 ms (11 chunks,
  ~1 s); the streaming backend gets it after an HTTP-integration prelude (`?mode=http`), the
  buffered one (plain Invoke, the emulator collects the writes into one payload) as a Lambda
  response JSON with the same body, written with the same timing; the native reference is nginx's
  echo module writing the same chunks with `echo_flush` and `echo_sleep 0.1`. A Python client
  (http.client, a new connection per request) times the head, the first body byte and the end;
  every case runs 5 times (after one warm-up each, which also starts the emulator's worker
  process), interleaved. t: the function `big` writes 100 MiB in 64 KiB writes after a prelude
  (writes block while the reader lags); the native reference is a 100 MiB static file from nginx;
  the emulator alone is the same invocation read raw from the emulator, without Varnish (the
  origin's ceiling). 3 runs each, interleaved; the client reads 1 MiB at a time and discards it.
- The bare client loop (e) runs bench/client_loop.py: vmod_lambda's Invoker against the same nginx,
  1 and 4 threads, each transport, CPU from the process's own clock.
"""


if __name__ == "__main__":
    main()
