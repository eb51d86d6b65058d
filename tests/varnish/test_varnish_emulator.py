"""varnishd with this VMOD in front of the local Lambda emulator: caching and request coalescing."""

import threading

import pytest

from lambda_emulator import Emulator, FunctionConfig
from support import HANDLERS
from support.varnish_harness import Varnishd, require_stage



@pytest.fixture(scope="module")
def emulator():
    require_stage()
    emu = Emulator({"page": FunctionConfig("handlers_varnish:slow_page", timeout=10,
                                           reserved_concurrency=50)}, paths=[HANDLERS])
    emu.start()
    yield emu
    emu.stop()


def vcl(url):
    return f"""vcl 4.1;
import lambda;
backend be none;
sub vcl_init {{
    new page = lambda.backend("page", "us-east-1", "{url}", timeout = 10s);
}}
sub vcl_recv {{
    set req.backend_hint = page.backend();
}}
"""


def test_concurrent_misses_cost_one_invocation_and_hits_none(emulator):
    emulator.reset()
    with Varnishd(vcl(emulator.url)) as v:
        results = []

        def get():
            results.append(v.request("/coalesce-me"))

        threads = [threading.Thread(target=get) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [r[0] for r in results] == [200] * 20
        assert {r[2] for r in results} == {b"rendered for /coalesce-me"}
        assert emulator.stats()["invocations"]["page"] == 1

        for _ in range(20):
            status, headers, body = v.request("/coalesce-me")
            assert status == 200 and body == b"rendered for /coalesce-me"
        assert emulator.stats()["invocations"]["page"] == 1
        assert not v.panicked()
