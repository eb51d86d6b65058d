"""What the tests of every layer share (docs/TESTS.md): the varnishd harness (varnish_harness), the one
scriptable fake Lambda endpoint (fake_lambda), HTTP client helpers (http_helpers), the hostile
response corpus (hostile_corpus), a test CA (tls), and the handler modules the emulator loads
(handlers/, given to FunctionConfig as path=[HANDLERS]).

Importable as `support` from any test module: tests/conftest.py puts tests/ on sys.path (pytest's
prepend import mode does so for the root conftest), and bench/ adds it itself.
"""

import os

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(TESTS)
SUPPORT = os.path.join(TESTS, "support")
HANDLERS = os.path.join(SUPPORT, "handlers")
