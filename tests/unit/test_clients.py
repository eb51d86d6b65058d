"""vmod_lambda.clients: objects with the same settings share one boto3 session, client and transport
(issue 21); the last one to go closes them; a new credential source gets a new session."""

import gc
import os

from vmod_lambda import clients
from vmod_lambda.config import validate_backend
from vmod_lambda.invoker import Invoker

URL = "http://127.0.0.1:9"      # nothing is sent in these tests


def direct(inv):
    """The direct transport's client of an object (None for the boto3 transport)."""
    return inv.transport.client if inv.transport.name == "direct" else None


def cfg(name="fn", region="us-east-1", url=URL, transport="direct", pool_size=None, timeout=None):
    return validate_backend(name, name, region, url, timeout, "json", pool_size, "1.0-compat",
                            False, transport, False, False, None, None)


def test_objects_with_the_same_settings_share_client_and_transport():
    a, b = Invoker(cfg("a", pool_size=3)), Invoker(cfg("b", pool_size=5))
    assert a.client is b.client and a.transport is b.transport and direct(a) is direct(b)
    assert a.cfg.function_name == "a" and b.cfg.function_name == "b"
    # The shared transport keeps as many idle connections as its users can have in flight.
    assert direct(a).pool_size == 8
    # The boto3 transport's objects share the boto3 client too (not the direct transport).
    c = Invoker(cfg("c", transport="boto3", pool_size=2))
    assert c.client is a.client and direct(c) is None and direct(a).pool_size == 10
    del c
    gc.collect()
    assert direct(a).pool_size == 8


def test_other_settings_get_their_own():
    a = Invoker(cfg("a"))
    for other in (cfg("b", region="eu-west-1"), cfg("c", url="http://127.0.0.1:10"),
                  cfg("d", timeout=5.0)):
        o = Invoker(other)
        assert o.client is not a.client and o.transport is not a.transport


def test_the_last_object_closes_what_it_shared():
    before = clients.stats()["clients"]
    a, b = Invoker(cfg("a", url="http://127.0.0.1:11")), Invoker(cfg("b", url="http://127.0.0.1:11"))
    assert clients.stats()["clients"] == before + 1
    transport = a.transport
    closed = []
    transport.close = lambda: closed.append(1)
    del a
    gc.collect()
    assert clients.stats()["clients"] == before + 1 and not closed
    del b
    gc.collect()
    assert clients.stats()["clients"] == before and closed == [1]
    # The next object gets a new client and transport.
    c = Invoker(cfg("c", url="http://127.0.0.1:11"))
    assert c.transport is not transport


def test_a_new_credential_source_gets_a_new_session(monkeypatch, tmp_path):
    a = Invoker(cfg("a"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDOTHERSOURCE")
    b = Invoker(cfg("b"))
    assert b.client is not a.client
    assert b.credentials.get_frozen_credentials().access_key == "AKIDOTHERSOURCE"
    assert a.credentials.get_frozen_credentials().access_key == "AKIDVMODLAMBDATEST"
    # Keys rotated in the shared credentials file: the next object signs with the new ones.
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    path = tmp_path / "credentials"
    path.write_text("[default]\naws_access_key_id = AKIDFILEONE\naws_secret_access_key = s1\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(path))
    c = Invoker(cfg("c"))
    assert c.credentials.get_frozen_credentials().access_key == "AKIDFILEONE"
    path.write_text("[default]\naws_access_key_id = AKIDFILETWO\naws_secret_access_key = s22\n")
    os.utime(path, ns=(1, 2))
    d = Invoker(cfg("d"))
    assert d.credentials.get_frozen_credentials().access_key == "AKIDFILETWO"
    assert c.credentials.get_frozen_credentials().access_key == "AKIDFILEONE"


def test_no_credentials_and_an_endpoint_sign_with_empty_keys(monkeypatch):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    a = Invoker(cfg("a"))
    assert a.anonymous and a.credentials.get_frozen_credentials().access_key == ""
    assert direct(a).credentials is a.credentials
