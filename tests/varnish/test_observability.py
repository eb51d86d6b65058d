"""varnishd in front of the emulator with log_tail = true: the function's own log lines and its REPORT
line reach varnishlog (credentials redacted), and the billed duration and cold starts are counted."""

import subprocess

import pytest

from lambda_emulator import Emulator, FunctionConfig
from support import HANDLERS
from support.varnish_harness import Varnishd, require_stage



@pytest.fixture(scope="module")
def emulator():
    require_stage()
    emu = Emulator({"chatty": FunctionConfig("handlers_varnish:chatty_page", timeout=10)},
                   paths=[HANDLERS])
    emu.start()
    yield emu
    emu.stop()


def vcl(url, log_tail):
    return f"""vcl 4.1;
import lambda;
backend be none;
sub vcl_init {{
    new chatty = lambda.backend("chatty", "us-east-1", "{url}", log_tail = {log_tail});
}}
sub vcl_recv {{
    set req.backend_hint = chatty.backend();
    return (pass);
}}
"""


def varnishlog(v):
    return subprocess.run(["varnishlog", "-n", v.workdir, "-d", "-g", "request"],
                          capture_output=True, text=True, timeout=30).stdout


def counters(v):
    out = subprocess.run(["varnishstat", "-n", v.workdir, "-1", "-f", "lambda.*"],
                         capture_output=True, text=True, timeout=30).stdout
    return {line.split()[0]: int(line.split()[1]) for line in out.splitlines() if line.strip()}


def test_log_tail_lines_reach_varnishlog_and_the_report_is_counted(emulator):
    emulator.reset()
    with Varnishd(vcl(emulator.url, "true")) as v:
        for path in ("/first", "/second"):
            status, _, body = v.request(path, headers={"Authorization": "Basic c2VjcmV0"})
            assert (status, body) == (200, b"chatty")
        log = varnishlog(v)
        ours = [line for line in log.splitlines() if "VCL_Log" in line]
        assert any(line.endswith("lambda: chatty: log: handling /first") for line in ours), log
        assert any(line.endswith("lambda: chatty: log: handling /second") for line in ours)
        assert any('"authorization": "[redacted]"' in line for line in ours), ours
        assert not any("c2VjcmV0" in line for line in ours)
        assert sum("lambda: chatty: log: REPORT RequestId: " in line for line in ours) == 2
        records = [line for line in ours if "lambda: chatty: fetch ok function=chatty" in line]
        assert len(records) == 2 and all("request_id=" in r and "version=$LATEST" in r
                                         for r in records)
        c = counters(v)
        assert c["lambda.chatty.fetch"] == 2 and c["lambda.chatty.req"] == 2
        # the emulator bills each invocation at least 1 ms, and its first one is a cold start
        assert c["lambda.chatty.billed_ms"] >= 2
        assert c["lambda.chatty.cold_start"] == 1
        assert not v.panicked()


def test_without_log_tail_no_function_lines_and_no_billing(emulator):
    emulator.reset()
    with Varnishd(vcl(emulator.url, "false")) as v:
        assert v.request("/x")[0] == 200
        ours = [line for line in varnishlog(v).splitlines() if "VCL_Log" in line]
        assert len(ours) == 1 and "lambda: chatty: fetch ok" in ours[0]
        c = counters(v)
        assert c["lambda.chatty.billed_ms"] == 0 and c["lambda.chatty.fetch"] == 1
