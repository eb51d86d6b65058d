"""Render docs/grafana-vmod-lambda.png: the panels of examples/grafana/vmod-lambda.json drawn from a
real scrape. Starts the local Lambda emulator, a varnishd with the staged build (make stage) and
Debian's prometheus-varnish-exporter on loopback ports, runs a 45-second mixed load (pages, function
errors, slow invocations that queue, timeouts, cold starts), scrapes /metrics every second, and
evaluates each panel's PromQL with a tiny evaluator that knows what the dashboard uses (rate() over a
5-second window, arithmetic, gauges). `make grafana-snapshot` runs it.

    VMOD_LAMBDA_STAGE=/var/tmp/vmod-lambda-test .venv/bin/python examples/grafana/snapshot.py OUT.png
"""

import json
import os
import re
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.join(HERE, "..", "..")
sys.path[:0] = [TOP, os.path.join(TOP, "tests")]      # tests/support: harness, exporter, handlers

import numpy as np  # noqa: E402

from lambda_emulator import Emulator, FunctionConfig  # noqa: E402
from support import HANDLERS  # noqa: E402
from support.prometheus import Exporter  # noqa: E402
from support.varnish_harness import Varnishd  # noqa: E402

OBJECT = "app"
MEMORY_MB = 512
DURATION = 45
WINDOW = 5      # seconds: the rate() window ($__rate_interval)

VCL = """vcl 4.1;
import lambda;
backend be none;
probe fn_health {{ .url = "/health"; .interval = 2s; .initial = 3; }}
sub vcl_init {{
    new app = lambda.backend("page", "us-east-1", "{url}", timeout = 2s, pool_size = 4,
                             probe = fn_health, log_tail = true);
}}
sub vcl_recv {{
    set req.backend_hint = app.backend();
    return (pass);
}}
"""


def load(v, stop, t0):
    """Pages all along; function errors from 10 s to 20 s; slow invocations (more than pool_size at
    once: they queue) from 20 s to 32 s; two timeouts at 32 s."""
    def client(k):
        i = 0
        while not stop.is_set():
            t = time.monotonic() - t0
            i += 1
            if 10 <= t < 20 and i % 4 == 0:
                path = f"/error/{k}/{i}"
            elif 20 <= t < 32 and k < 3:
                path = "/slow/0.6"
            elif 32 <= t < 33 and k == 0 and i % 2:
                path = "/slow/3"
            else:
                path = f"/page/{k}/{i}"
            v.request(path)
            time.sleep(0.05)
    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(6)]
    for th in threads:
        th.start()
    return threads


def evaluate(expr, series, times):
    """The dashboard's PromQL subset: rate(NAME[$__rate_interval]), gauges, + - * /, numbers."""
    expr = expr.replace("${object}", OBJECT).replace("$memory_mb", str(MEMORY_MB))

    def rate(name):
        v = np.array(series.get(name, [np.nan] * len(times)), dtype=float)
        out = np.full(len(v), np.nan)
        for i in range(len(v)):
            j = max(0, int(np.searchsorted(times, times[i] - WINDOW)))
            if i > j:
                out[i] = (v[i] - v[j]) / (times[i] - times[j])
        return out

    code = re.sub(r"rate\((\w+)\[\$__rate_interval\]\)", r'R("\1")', expr)
    code = re.sub(r'(?<!")\b(varnish_\w+)', r'G("\1")', code)
    with np.errstate(divide="ignore", invalid="ignore"):
        return eval(code, {"R": rate, "G": lambda n: np.array(series[n], dtype=float)})  # noqa: S307


def main(out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(os.path.join(HERE, "vmod-lambda.json")) as f:
        dash = json.load(f)
    emu = Emulator({"page": FunctionConfig("handlers_metrics:page", timeout=10, memory_size=MEMORY_MB,
                                           reserved_concurrency=10)},
                   paths=[HANDLERS])
    emu.start()
    try:
        with Varnishd(VCL.format(url=emu.url)) as v:
            exp = Exporter(v.workdir)
            try:
                series, times = {}, []
                stop = threading.Event()
                t0 = time.monotonic()
                threads = load(v, stop, t0)
                while time.monotonic() - t0 < DURATION:
                    _, samples = exp.scrape()
                    times.append(time.monotonic() - t0)
                    for (name, labels), value in samples.items():
                        if labels == f'{{id="lambda.{OBJECT}"}}':
                            series.setdefault(name, []).append(value)
                    time.sleep(max(0.0, len(times) - (time.monotonic() - t0)))
                stop.set()
                for th in threads:
                    th.join()
            finally:
                exp.stop()
    finally:
        emu.stop()
    times = np.array(times)

    panels = [p for p in dash["panels"] if p["type"] == "timeseries"]
    fig, axes = plt.subplots(4, 2, figsize=(14, 13), sharex=True)
    unit_scale = {"percentunit": (100, "%"), "reqps": (1, "/s"), "ms": (1, "ms"), "short": (1, "")}
    for ax, panel in zip(axes.flat, sorted(panels, key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))):
        scale, unit = unit_scale[panel["fieldConfig"]["defaults"]["unit"]]
        stacked = panel["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal"
        curves = [(t["legendFormat"], evaluate(t["expr"], series, times) * scale) for t in panel["targets"]]
        if stacked:
            shown = [(lbl, np.nan_to_num(y)) for lbl, y in curves if np.nanmax(np.nan_to_num(y)) > 0]
            if shown:
                ax.stackplot(times, *[y for _, y in shown], labels=[lbl for lbl, _ in shown], alpha=0.7)
        else:
            for lbl, y in curves:
                ax.plot(times, y, label=lbl, linewidth=1.5)
        ax.set_title(f"{panel['title']} ({unit})" if unit else panel["title"], fontsize=11)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", ncol=2)
    for ax in axes[-1]:
        ax.set_xlabel("seconds")
    fig.suptitle(f"vmod-lambda dashboard (examples/grafana/vmod-lambda.json), lambda.{OBJECT}: "
                 f"{len(times)} scrapes of prometheus-varnish-exporter, 1/s, rate() over {WINDOW} s",
                 fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(out, dpi=80)
    totals = {k[len(f"varnish_main_lambda_{OBJECT}_"):]: v[-1]
              for k, v in series.items()}
    print(json.dumps({"scrapes": len(times), "totals": totals}, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(TOP, "docs", "grafana-vmod-lambda.png"))
