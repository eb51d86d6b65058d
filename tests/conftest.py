"""Shared fixtures: fake AWS credentials and switched-off metadata lookups (tests talk to loopback only),
the scripted fake Lambda endpoint, and a check that no test leaves a thread blocked in a socket call
on a socket it closed. The helpers the fixtures use are in the support package (tests/support/,
importable as `support` because pytest puts this folder on sys.path)."""

import pytest

from support.fake_lambda import scripted
from support.listeners import stranded_threads


@pytest.fixture(autouse=True)
def aws_env(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDVMODLAMBDATEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "vmod-lambda-test-secret")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    for var in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_LAMBDA"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def api():
    """A scripted fake Lambda endpoint (support.fake_lambda.scripted): requests recorded, request ids
    req-1, req-2, ..."""
    s = scripted()
    yield s
    s.stop()


def _check_stranded():
    found = stranded_threads()
    stranded = [(name, what) for ident, name, what in found if ident not in _reported_stranded]
    _reported_stranded.update(ident for ident, _, _ in found)
    assert not stranded, f"threads blocked on a socket closed under them: {stranded}"


_reported_stranded = set()


@pytest.fixture(autouse=True)
def no_stranded_threads():
    """A thread left in accept() on a socket closed under it takes the connections of a later
    test's server once its call is restarted on the reused fd number (support.listeners): the
    test that leaves one fails here, not a test that runs later in the same process (each thread
    is reported once, by the test that left it)."""
    yield
    _check_stranded()


@pytest.fixture(autouse=True, scope="module")
def no_stranded_threads_after_module():
    """The same once a module's own fixtures (servers of scope="module") have been torn down."""
    yield
    _check_stranded()
