"""Debian's prometheus-varnish-exporter against a varnishd running this VMOD: every
lambda.<object>.<counter> is exported, scraped over HTTP, with its type (counters as counters;
inflight, queued and the happy bitmap as gauges) and its value.

The exporter names counters outside Varnish's own groups (MAIN, VBE, SMA, ...) as
varnish_main_<group>_<ident>_<counter> with the label id="<group>.<ident>": here
varnish_main_lambda_<object>_<counter>{id="lambda.<object>"} (README, Monitoring; the dashboard in
examples/grafana/ is built on these names). Skipped where the package is not installed: `make
test-prometheus` installs it and runs this file."""

import os
import re
import shutil
import threading
import time

import pytest

from lambda_emulator import Emulator, FunctionConfig
from support import HANDLERS, ROOT
from support.prometheus import EXPORTER, Exporter
from support.varnish_harness import Varnishd, require_stage

VSC = os.path.join(ROOT, "include", "VSC_lambda.vsc")
GAUGES = {"inflight", "queued", "happy"}


def vsc_counters():
    """{counter: type} as include/VSC_lambda.vsc declares them."""
    with open(VSC) as f:
        text = f.read()
    return dict(re.findall(r"^\.\. varnish_vsc:: (\w+)\n\t:type:\t(\w+)", text, re.M))


VCL = """vcl 4.1;
import lambda;
backend be none;
probe fn_health {{ .url = "/health"; .interval = 60s; .initial = 3; }}
sub vcl_init {{
    new page = lambda.backend("page", "us-east-1", "{url}", timeout = 10s, probe = fn_health,
                              log_tail = true);
    new api_v1 = lambda.backend("page", "us-east-1", "{url}", timeout = 10s);
}}
sub vcl_recv {{
    if (req.url ~ "^/api/") {{
        set req.backend_hint = api_v1.backend();
    }} else {{
        set req.backend_hint = page.backend();
    }}
    return (pass);
}}
"""


@pytest.fixture(scope="module")
def setup():
    if not shutil.which(EXPORTER):
        pytest.skip(f"{EXPORTER} is not installed (Debian package prometheus-varnish-exporter): "
                    "`make test-prometheus` installs it and runs this test")
    require_stage()
    emu = Emulator({"page": FunctionConfig("handlers_metrics:page", timeout=10,
                                           reserved_concurrency=10)}, paths=[HANDLERS])
    emu.start()
    try:
        with Varnishd(VCL.format(url=emu.url)) as v:
            exp = Exporter(v.workdir)
            try:
                yield v, exp
            finally:
                exp.stop()
    finally:
        emu.stop()


def test_every_lambda_counter_is_exported_with_its_type_and_value(setup):
    v, exp = setup
    for path in ("/a", "/b", "/error/x", "/api/c"):
        v.request(path)
    counters = vsc_counters()
    assert len(counters) > 20 and counters["inflight"] == counters["queued"] == "gauge"
    # The probe's first run is done (the next is a minute away) and no traffic: varnishstat and
    # the scrape see the same values.
    deadline = time.monotonic() + 10
    while v.counters("lambda.page.probe").get("lambda.page.probe", 0) < 1:
        assert time.monotonic() < deadline, "the probe did not run"
        time.sleep(0.1)
    time.sleep(0.5)
    stat = v.counters("lambda.*")
    types, samples = exp.scrape()
    objects = {"page", "api_v1"}
    assert {k.split(".")[1] for k in stat} == objects
    for obj in objects:
        for counter, vsc_type in counters.items():
            assert f"lambda.{obj}.{counter}" in stat, f"varnishstat lacks lambda.{obj}.{counter}"
            name = f"varnish_main_lambda_{obj}_{counter}"
            key = (name, f'{{id="lambda.{obj}"}}')
            assert key in samples, f"{name} not exported"
            want = "gauge" if counter in GAUGES else "counter"
            assert vsc_type == ("bitmap" if counter == "happy" else want), counter
            assert types[name] == want, f"{name}: {types[name]}, not {want}"
            if counter not in GAUGES:
                assert samples[key] == stat[f"lambda.{obj}.{counter}"], name
    # The traffic shows up where a dashboard looks for it.
    assert samples[("varnish_main_lambda_page_fetch", '{id="lambda.page"}')] == 3
    assert samples[("varnish_main_lambda_page_function_error", '{id="lambda.page"}')] == 1
    assert samples[("varnish_main_lambda_api_v1_fetch", '{id="lambda.api_v1"}')] == 1
    assert samples[("varnish_main_lambda_page_probe", '{id="lambda.page"}')] >= 1
    assert samples[("varnish_main_lambda_page_billed_ms", '{id="lambda.page"}')] > 0
    assert samples[("varnish_up", "")] == 1


def test_inflight_is_a_gauge_that_goes_up_and_back_down(setup):
    v, exp = setup
    t = threading.Thread(target=v.request, args=("/api/slow/2",))
    t.start()
    try:
        deadline = time.monotonic() + 10
        seen = 0
        while time.monotonic() < deadline and not seen:
            _, samples = exp.scrape()
            seen = samples[("varnish_main_lambda_api_v1_inflight", '{id="lambda.api_v1"}')]
            time.sleep(0.1)
        assert seen == 1
    finally:
        t.join()
    _, samples = exp.scrape()
    assert samples[("varnish_main_lambda_api_v1_inflight", '{id="lambda.api_v1"}')] == 0
