"""The emulator's InvokeWithResponseStream, read with real botocore (invoke_with_response_stream) and
with vmod_lambda.eventstream from a raw HTTP connection. Everything on 127.0.0.1."""

import base64
import http.client
import json
import os
import time

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.eventstream import ChecksumMismatch

from vmod_lambda import eventstream
from lambda_emulator import Emulator, FunctionConfig
from support import HANDLERS, ROOT
from support.handlers.handlers_emulator import big_chunks

EXAMPLES = os.path.join(ROOT, "examples")


def th(handler, **kw):
    return FunctionConfig(f"handlers_emulator:{handler}", path=[HANDLERS], **kw)


FUNCTIONS = {
    "chunks": th("stream_chunks", timeout=30),
    "http": th("stream_http", timeout=30),
    "error": th("stream_error", timeout=30),
    "fault": th("stream_fault", timeout=30),
    "big": th("stream_big", timeout=300),
    "slowstream": th("stream_chunks", timeout=1),
    "echo": FunctionConfig("app:echo", path=[EXAMPLES]),
    "crash": th("crash"),
}


@pytest.fixture(scope="module")
def emu():
    with Emulator(FUNCTIONS) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def client(emu):
    return boto3.client("lambda", endpoint_url=emu.url, region_name="us-east-1",
                        aws_access_key_id="AKIDEMULATORTEST", aws_secret_access_key="secret",
                        config=Config(retries={"total_max_attempts": 1}, read_timeout=60))


def stream(client, name, event, **kw):
    resp = client.invoke_with_response_stream(FunctionName=name,
                                              Payload=json.dumps(event).encode(), **kw)
    return resp, list(resp["EventStream"])


def chunks_of(events):
    return [e["PayloadChunk"]["Payload"] for e in events if "PayloadChunk" in e]


def raw_stream(emu, name, event, headers=None, read=65536, on_event=None, keep=True):
    """POST to the streaming path with http.client; decode with vmod_lambda.eventstream. keep=False
    keeps only the final event (a big stream is checked by on_event, not held)."""
    conn = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=60)
    conn.request("POST", f"/2021-11-15/functions/{name}/response-streaming-invocations",
                 body=json.dumps(event).encode(), headers=headers or {})
    resp = conn.getresponse()
    ls = eventstream.LambdaStream()
    events = []
    try:
        while True:
            data = resp.read1(read)
            if not data:
                break
            for ev in ls.feed(data):
                if keep or ev.kind == "complete":
                    events.append(ev)
                if on_event:
                    on_event(ev)
        ls.close()
    finally:
        conn.close()
    return resp, events


def test_botocore_reads_chunks_and_invoke_complete(client):
    resp, events = stream(client, "chunks", {"n": 3, "size": 5, "text": "ab"})
    assert resp["StatusCode"] == 200
    assert resp["ExecutedVersion"] == "$LATEST"
    assert resp["ResponseStreamContentType"] == "application/vnd.amazon.eventstream"
    assert chunks_of(events) == [b"ababa"] * 3
    assert events[-1] == {"InvokeComplete": {}}


def test_an_ordinary_handler_is_streamed_whole(client):
    resp, events = stream(client, "echo", {"hello": "world"})
    assert json.loads(b"".join(chunks_of(events))) == {"hello": "world"}
    assert "InvokeComplete" in events[-1] and "ErrorCode" not in events[-1]["InvokeComplete"]


def test_tail_log_result_and_qualifier(client):
    resp, events = stream(client, "big", {"mb": 1}, LogType="Tail", Qualifier="7")
    assert resp["ExecutedVersion"] == "7"
    assert len(b"".join(chunks_of(events))) == 1 << 20
    log = base64.b64decode(events[-1]["InvokeComplete"]["LogResult"]).decode()
    assert "streamed 1 MiB" in log and "REPORT RequestId" in log


def test_http_integration_prelude_then_binary_body(emu, client):
    prelude = {"statusCode": 418, "headers": {"Content-Type": "image/png", "X-Tea": "pot"},
               "cookies": ["a=1", "b=2; Secure"]}
    body = bytes(range(256)).decode("latin-1")
    resp, events = stream(client, "http", {"prelude": prelude, "parts": [body, "\x00" * 10]})
    data = b"".join(chunks_of(events))
    parsed, rest = eventstream.PreludeParser().feed(data)
    assert parsed.status == 418
    assert parsed.headers == [("Content-Type", "image/png"), ("X-Tea", "pot"),
                              ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2; Secure")]
    assert rest == bytes(range(256)) + b"\0" * 10


def test_plain_invoke_of_a_streaming_handler_buffers_its_output(client):
    resp = client.invoke(FunctionName="chunks", Payload=b'{"n": 4, "size": 3}')
    assert resp["Payload"].read() == b"xxx" * 4
    assert "FunctionError" not in resp


def test_chunks_arrive_while_the_function_still_runs(emu):
    arrivals = []
    t0 = time.monotonic()
    raw_stream(emu, "chunks", {"n": 3, "size": 4, "delay": 1.0},
               on_event=lambda ev: arrivals.append((ev.kind, time.monotonic() - t0)))
    kinds = [k for k, _ in arrivals]
    assert kinds == ["chunk", "chunk", "chunk", "complete"]
    # The first chunk came long before the function ended (>= 2 s of sleeps after it).
    assert arrivals[2][1] - arrivals[0][1] >= 1.5


def test_error_mid_stream_is_reported_in_invoke_complete(client):
    resp, events = stream(client, "error", {})
    assert resp["StatusCode"] == 200
    assert b"".join(chunks_of(events)) == b"partial output then"
    done = events[-1]["InvokeComplete"]
    assert done["ErrorCode"] == "ValueError"
    assert json.loads(done["ErrorDetails"])["errorMessage"] == "boom mid-stream"


def test_timeout_mid_stream(emu):
    resp, events = raw_stream(emu, "slowstream", {"n": 5, "size": 2, "delay": 0.6})
    assert events[0].kind == "chunk"
    assert events[-1].error_code == "Sandbox.Timedout"
    assert "Task timed out after 1.00 seconds" in events[-1].error_details


def test_crash_is_reported_in_invoke_complete(emu):
    resp, events = raw_stream(emu, "crash", {"code": 3})
    assert events[-1].error_code == "Runtime.ExitError"
    assert "exit status 3" in events[-1].error_details


@pytest.mark.parametrize("where", ["message", "prelude"])
def test_corrupt_crc_fault_is_caught_by_botocore_and_by_the_decoder(emu, client, where):
    resp = client.invoke_with_response_stream(
        FunctionName="fault", Payload=json.dumps({"fault": "corrupt_crc",
                                                  "options": {"where": where}}).encode())
    it = iter(resp["EventStream"])
    assert next(it)["PayloadChunk"]["Payload"] == b"before"
    with pytest.raises(ChecksumMismatch):
        next(it)
    with pytest.raises(eventstream.ChecksumError, match=f"{where} CRC mismatch in message 2"):
        raw_stream(emu, "fault", {"fault": "corrupt_crc", "options": {"where": where}})


def test_close_fault_truncates_the_stream(emu):
    with pytest.raises((eventstream.TruncatedError, http.client.IncompleteRead)):
        raw_stream(emu, "fault", {"fault": "close"})


def test_stall_fault_holds_the_next_frame(emu):
    arrivals = []
    t0 = time.monotonic()
    raw_stream(emu, "fault", {"fault": "stall", "options": {"seconds": 1.5}},
               on_event=lambda ev: arrivals.append((ev.data, time.monotonic() - t0)))
    assert [d for d, _ in arrivals] == [b"before", b"after", b""]
    assert arrivals[1][1] - arrivals[0][1] >= 1.2


def test_service_errors_are_plain_json(client):
    with pytest.raises(ClientError) as exc:
        client.invoke_with_response_stream(FunctionName="nope", Payload=b"{}")
    assert exc.value.response["Error"]["Code"] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as exc:
        client.invoke_with_response_stream(FunctionName="echo", Payload=b"{not json")
    assert exc.value.response["Error"]["Code"] == "InvalidRequestContentException"
    resp = client.invoke_with_response_stream(FunctionName="echo", Payload=b"{}",
                                              InvocationType="DryRun")
    assert resp["StatusCode"] == 204


def test_event_invocation_type_is_refused(emu):
    conn = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=10)
    conn.request("POST", "/2021-11-15/functions/echo/response-streaming-invocations", body=b"{}",
                 headers={"X-Amz-Invocation-Type": "Event"})
    resp = conn.getresponse()
    assert resp.status == 400 and b"invocationType" in resp.read()
    conn.close()


def vm_rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_100_mib_stream_with_backpressure_in_bounded_memory(emu):
    """100 MiB from a generator: the emulator and this reader hold one frame at a time; a slow
    reader makes the function wait (its writes block) instead of memory growing. This process
    runs the emulator's HTTP side: its RSS, sampled along the way, must stay flat."""
    expected = big_chunks(1600, 65536)
    buf = bytearray()
    total = 0
    rss_start = vm_rss_kib()
    rss_peak = [rss_start]
    first = [True]

    def check(ev):
        nonlocal total
        if ev.kind != "chunk":
            return
        if first[0]:
            first[0] = False
            time.sleep(1.0)           # a slow reader: the stream must wait, not pile up
        buf.extend(ev.data)
        while len(buf) >= 65536:
            assert bytes(buf[:65536]) == next(expected)
            del buf[:65536]
            total += 65536
            if total % (4 << 20) == 0:
                rss_peak[0] = max(rss_peak[0], vm_rss_kib())

    resp, events = raw_stream(emu, "big", {"mb": 100}, on_event=check, keep=False)
    assert total == 100 * 1024 * 1024 and not buf
    assert events[-1].kind == "complete" and events[-1].error_code is None
    growth_mib = (rss_peak[0] - rss_start) / 1024
    assert growth_mib < 40, f"RSS grew by {growth_mib:.0f} MiB while streaming 100 MiB"


def test_a_client_that_goes_away_ends_the_function(emu):
    conn = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=30)
    conn.request("POST", "/2021-11-15/functions/big/response-streaming-invocations",
                 body=b'{"mb": 150}')
    resp = conn.getresponse()
    assert resp.read1(65536)
    conn.close()
    assert emu.wait_idle(30), "the abandoned invocation still runs"
