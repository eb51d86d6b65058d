"""Shared fixtures: fake AWS credentials and switched-off metadata lookups (tests talk to loopback only),
and the scripted fake Lambda endpoint. The helpers the fixtures use are in the support package
(tests/support/, importable as `support` because pytest puts this folder on sys.path)."""

import pytest

from support.fake_lambda import scripted


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
