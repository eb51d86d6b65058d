"""The boto3 transport keeps the call's deadline for the answer's head too (issue 20 point 2;
vmod_lambda/transport/boto3_deadline.py): an endpoint that trickles its whole answer, status line
and headers included, one byte every 0.5 s, cannot hold the worker or its connection past the
deadline. Real boto3 over HTTP to tests/support/fake_lambda.py."""

import time

import pytest

from support.fake_lambda import Action, FakeLambda
from vmod_lambda.config import validate_backend
from vmod_lambda.invoker import InvocationRecord, Invoker
from vmod_lambda.transport.base import InvokeError, InvokeRequest

TIMEOUT = 1.0
# The watchdog shuts the socket at the deadline: the worker is back at once. The slack is the
# scheduler's on a loaded 2-core machine; the trickles below take more than 40 s.
SLACK = 0.3


@pytest.fixture
def boto3_transport():
    made = []

    def make(url):
        inv = Invoker(validate_backend("t", "f", "us-east-1", endpoint_url=url,
                                       transport="boto3", timeout=TIMEOUT))
        made.append(inv.transport)
        return inv.transport

    yield make
    for t in made:
        t.close()


def rec():
    return InvocationRecord("RequestResponse", None, 0)


def wait_for(cond, seconds=5.0):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def trickle():
    return Action("trickle", b'{"statusCode":200,"body":"ok"}', delay=0.5)


def test_a_trickling_head_ends_at_the_deadline_and_its_connection_is_closed(boto3_transport):
    with FakeLambda(lambda name, event: trickle()) as fake:
        t = boto3_transport(fake.url)
        start = time.monotonic()
        with pytest.raises(InvokeError) as e:
            t.invoke(InvokeRequest("f", b"{}", deadline=start + TIMEOUT), rec())
        waited = time.monotonic() - start
        assert e.value.kind == "timeout", e.value
        assert str(e.value) == "timed out after 1s waiting for the function"
        assert waited < TIMEOUT + SLACK, waited
        # The worker dropped the connection: the endpoint's next byte finds it gone.
        assert wait_for(lambda: fake.closed == fake.connections == 1), (fake.connections,
                                                                       fake.closed)


def test_a_trickling_stream_head_ends_at_the_deadline(boto3_transport):
    with FakeLambda(lambda name, event: trickle()) as fake:
        t = boto3_transport(fake.url)
        start = time.monotonic()
        with pytest.raises(InvokeError) as e:
            t.invoke_stream(InvokeRequest("f", b"{}", deadline=start + TIMEOUT), rec())
        waited = time.monotonic() - start
        assert e.value.kind == "timeout", e.value
        assert waited < TIMEOUT + SLACK, waited
        assert wait_for(lambda: fake.closed == fake.connections == 1)


def test_after_a_cut_call_the_next_one_gets_a_new_connection(boto3_transport):
    with FakeLambda() as fake:
        fake.script.append(trickle())
        t = boto3_transport(fake.url)
        with pytest.raises(InvokeError):
            t.invoke(InvokeRequest("f", b"{}", deadline=time.monotonic() + TIMEOUT), rec())
        r = t.invoke(InvokeRequest("f", b"{}", deadline=time.monotonic() + TIMEOUT), rec())
        assert r.payload == b"null"
        assert fake.connections == 2 and fake.invocations == 2


def test_a_call_that_ended_in_time_keeps_its_connection_past_its_deadline(boto3_transport):
    # The watchdog never shuts a socket after its call ended: the pooled keep-alive connection
    # of a call that answered in time serves the next call, made after the first one's deadline.
    with FakeLambda() as fake:
        t = boto3_transport(fake.url)
        first = time.monotonic() + 0.2
        assert t.invoke(InvokeRequest("f", b"{}", deadline=first), rec()).payload == b"null"
        while time.monotonic() < first + 0.3:
            time.sleep(0.05)
        r = t.invoke(InvokeRequest("f", b"{}", deadline=time.monotonic() + TIMEOUT), rec())
        assert r.payload == b"null"
        assert fake.connections == 1 and fake.closed == 0 and fake.invocations == 2


def test_the_watchdogs_heap_does_not_keep_every_ended_call():
    # Calls of a long timeout end long before their deadlines: their entries are dropped in bulk
    # once they are most of the heap, so many calls a second do not pile up for the timeout.
    from vmod_lambda.transport import boto3_deadline
    dog = boto3_deadline._watchdog
    n = 3 * dog.COMPACT
    for _ in range(n):
        with boto3_deadline.watch(time.monotonic() + 3600) as call:
            assert boto3_deadline.current() is call
        assert boto3_deadline.current() is None
    with dog._cond:
        assert len(dog._heap) <= dog.COMPACT + 1, len(dog._heap)
