"""Collect every JSON response payload the unit tests map, into existing.txt (the corpus that
tests/compiled/test_fastresponse.py runs through both mappings).

    PYTHONPATH=.:tests/support/corpus/response .venv/bin/python -m pytest -q -p harvest \
        tests/unit/test_events.py tests/compiled/test_fetch.py tests/unit/test_fuzz.py tests/varnish/test_mux.py

A pytest plugin: it wraps events.parse_response (and the name fetch.py imported) before the test
modules import it, records each "json" payload of at most 64 KiB, and writes them once the session
ends, one base64 line each, sorted and without repeats.
"""

import base64
import os

from vmod_lambda import events, fetch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "existing.txt")
SEEN = set()
_orig = events.parse_response


def _recording(fmt, payload):
    if fmt == "json" and payload is not None and len(payload) <= 65536:
        SEEN.add(bytes(payload))
    return _orig(fmt, payload)


events.parse_response = _recording
fetch.parse_response = _recording


def pytest_sessionfinish(session, exitstatus):
    old = set()
    if os.path.exists(OUT):
        with open(OUT) as f:
            old = {base64.b64decode(line) for line in f if line.strip()}
    with open(OUT, "w") as f:
        for p in sorted(old | SEEN):
            f.write(base64.b64encode(p).decode() + "\n")
