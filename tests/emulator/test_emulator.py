"""The Lambda emulator (lambda_emulator), driven with real boto3 as against AWS Lambda.

Every request goes to 127.0.0.1. Handlers: examples/app.py and tests/support/handlers/handlers_emulator.py.
"""

import base64
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid

import boto3
import pytest
from botocore.config import Config

from support import HANDLERS, ROOT
from support.http_helpers import exchange

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from lambda_emulator import (Emulator, EmulatorConfigError, FunctionConfig,  # noqa: E402
                             MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, load_config)

EXAMPLES = os.path.join(ROOT, "examples")
ARN = "arn:aws:lambda:us-east-1:123456789012:function:"
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def app(handler, **kw):
    return FunctionConfig(f"app:{handler}", path=[EXAMPLES], **kw)


def th(handler, **kw):
    return FunctionConfig(f"handlers_emulator:{handler}", path=[HANDLERS], **kw)


FUNCTIONS = {
    "echo": app("echo"),
    "hello": app("hello"),
    "fail": app("fail"),
    "big": app("big"),
    "slow": app("slow", timeout=1),
    "single": app("slow", timeout=10, reserved_concurrency=1),
    "ctx": th("context_info", timeout=5, memory_size=256,
              environment={"GREETING": "hello from config", "EMPTY": ""}),
    "chatty": th("chatty"),
    "crash": th("crash"),
    "segv": th("segfault"),
    "sleepy": th("sleep_pid", timeout=1),
    "marshal": th("unserializable"),
    "record": th("record"),
    "nomodule": FunctionConfig("no_such_module:handler"),
    "zero": app("echo", reserved_concurrency=0),
}


@pytest.fixture(scope="module")
def emu():
    with Emulator(FUNCTIONS) as emulator:
        yield emulator


def make_client(url):
    return boto3.client("lambda", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id="AKIDEMULATORTEST", aws_secret_access_key="secret",
                        config=Config(retries={"total_max_attempts": 1}, read_timeout=30,
                                      connect_timeout=5))


@pytest.fixture(scope="module")
def client(emu):
    return make_client(emu.url)


def invoke(client, name, payload=None, **kw):
    """Invoke; returns (response, decoded JSON payload or None)."""
    if payload is not None:
        kw["Payload"] = payload if isinstance(payload, bytes) else json.dumps(payload)
    resp = client.invoke(FunctionName=name, **kw)
    body = resp["Payload"].read()
    return resp, (json.loads(body) if body else None)


def tail(resp):
    return base64.b64decode(resp["LogResult"]).decode("utf-8", "replace")


# -- RequestResponse, Event, DryRun

def test_request_response_returns_the_handlers_value_as_json(client):
    event = {"a": [1, 2.5, None, True], "text": "é€"}
    resp, body = invoke(client, "echo", event)
    assert resp["StatusCode"] == 200
    assert body == event
    assert "FunctionError" not in resp
    assert resp["ExecutedVersion"] == "$LATEST"
    headers = resp["ResponseMetadata"]["HTTPHeaders"]
    assert UUID_RE.match(headers["x-amzn-requestid"])
    assert headers["content-type"] == "application/json"


def test_return_values_are_json_serialised_as_lambda_does(client):
    resp = client.invoke(FunctionName="big", Payload=b'{"size": 3}')
    assert resp["Payload"].read() == b'"xxx"'          # a str is sent as a JSON string
    resp, body = invoke(client, "echo")
    assert body == {}                                  # no payload: the event is {}
    resp, body = invoke(client, "echo", b'"just a string"')
    assert body == "just a string"


@pytest.mark.parametrize("event", [
    {"version": "2.0", "rawPath": "/v2/path", "requestContext": {"http": {"method": "GET"}}},
    {"httpMethod": "GET", "path": "/v1/path", "requestContext": {"stage": "prod"}},
    {"httpMethod": "GET", "path": "/alb/path", "requestContext": {"elb": {"targetGroupArn": "x"}}},
])
def test_example_hello_answers_every_http_event_format(client, event):
    resp, body = invoke(client, "hello", event)
    assert body["statusCode"] == 200
    assert body["headers"] == {"content-type": "text/html"}
    assert body["body"].startswith("<h1>Hello from Lambda</h1>")
    path = event.get("rawPath") or event["path"]
    assert path in body["body"]
    assert ("statusDescription" in body) == ("elb" in event["requestContext"])


def test_event_invocation_answers_202_and_runs_in_background(emu, client, tmp_path):
    out = tmp_path / "event.txt"
    t0 = time.monotonic()
    resp, body = invoke(client, "record", {"file": str(out), "text": "async hello", "sleep": 1},
                        InvocationType="Event")
    assert time.monotonic() - t0 < 0.9                 # answered before the handler finished
    assert not out.exists()
    assert resp["StatusCode"] == 202
    assert body is None
    assert "FunctionError" not in resp
    assert emu.wait_idle(10)
    pid, request_id, text = out.read_text().split(" ", 2)
    assert text == "async hello"
    assert request_id == resp["ResponseMetadata"]["RequestId"]
    assert int(pid) != os.getpid()


def test_dry_run_answers_204_without_running(emu, client):
    before = emu.stats()["invocations"]["echo"]
    resp, body = invoke(client, "echo", {"x": 1}, InvocationType="DryRun")
    assert resp["StatusCode"] == 204
    assert body is None
    assert emu.stats()["invocations"]["echo"] == before
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke(FunctionName="missing", InvocationType="DryRun")


# -- Function names and qualifiers

@pytest.mark.parametrize("name, qualifier, version, arn_suffix", [
    ("ctx", None, "$LATEST", "ctx"),
    ("ctx", "$LATEST", "$LATEST", "ctx:$LATEST"),
    ("ctx", "prod", "$LATEST", "ctx:prod"),
    ("ctx:live", None, "$LATEST", "ctx:live"),
    ("ctx", "7", "7", "ctx:7"),
    ("ctx:12", None, "12", "ctx:12"),
    (ARN + "ctx", None, "$LATEST", "ctx"),
    (ARN + "ctx:blue", None, "$LATEST", "ctx:blue"),
    ("123456789012:function:ctx", "green", "$LATEST", "ctx:green"),
])
def test_name_alias_arn_and_qualifier_forms(client, name, qualifier, version, arn_suffix):
    kw = {"Qualifier": qualifier} if qualifier else {}
    resp, body = invoke(client, name, **kw)
    assert resp["StatusCode"] == 200
    assert resp["ExecutedVersion"] == version
    assert body["function_name"] == "ctx"
    assert body["function_version"] == version
    assert body["invoked_function_arn"] == ARN + arn_suffix


def test_qualifier_conflicting_with_the_name_is_rejected(client):
    with pytest.raises(client.exceptions.InvalidParameterValueException):
        client.invoke(FunctionName="ctx:blue", Qualifier="green")


# -- Logs

def test_tail_log_has_start_output_end_and_report(client):
    resp, body = invoke(client, "chatty", {}, LogType="Tail")
    assert body == "done"
    rid = resp["ResponseMetadata"]["RequestId"]
    text = tail(resp)
    lines = text.splitlines()
    start = lines.index(f"START RequestId: {rid} Version: $LATEST")
    end = lines.index(f"END RequestId: {rid}")
    output = "\n".join(lines[start + 1:end])
    for wanted in ("to stdout via print", "to stderr via print", "straight to file descriptor 1"):
        assert wanted in output
    assert re.search(rf"\[WARNING\]\t\d{{4}}-\d\d-\d\dT[\d:.]+Z\t{rid}\ta logged warning", output)
    assert "below the default level" not in text           # root logger at WARNING, as Lambda
    assert re.match(rf"^REPORT RequestId: {rid}\tDuration: \d+\.\d\d ms\tBilled Duration: \d+ ms\t"
                    r"Memory Size: 128 MB\tMax Memory Used: \d+ MB\t", lines[end + 1])
    # Without Tail, no log.
    resp, _ = invoke(client, "chatty", {})
    assert "LogResult" not in resp


def test_tail_log_is_the_last_4_kb(client):
    resp, _ = invoke(client, "chatty", {"lines": 100}, LogType="Tail")
    raw = base64.b64decode(resp["LogResult"])
    assert len(raw) == 4096
    text = raw.decode()
    assert "line 00099" in text and "line 00000" not in text
    assert text.rstrip("\t\n").split("\n")[-1].startswith("REPORT RequestId: ")


def test_first_invocation_log_shows_the_init_output():
    with Emulator({"cold": th("chatty")}) as cold:
        c = make_client(cold.url)
        first = tail(c.invoke(FunctionName="cold", LogType="Tail"))
        second = tail(c.invoke(FunctionName="cold", LogType="Tail"))
    assert "handlers_emulator: module imported" in first.split("START RequestId")[0]
    assert re.search(r"\tInit Duration: \d+\.\d\d ms\t", first)
    assert "module imported" not in second and "Init Duration" not in second


# -- API errors

def test_unknown_function_is_resource_not_found(client):
    with pytest.raises(client.exceptions.ResourceNotFoundException) as info:
        client.invoke(FunctionName="no-such-function", Payload=b"{}")
    err = info.value.response
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert err["Error"]["Message"] == f"Function not found: {ARN}no-such-function"
    assert err["Type"] == "User"
    assert UUID_RE.match(err["ResponseMetadata"]["RequestId"])


def test_request_over_6_mb_is_request_too_large(client):
    exactly = b'"' + b"a" * (MAX_REQUEST_BYTES - 2) + b'"'
    assert len(exactly) == 6291456
    resp = client.invoke(FunctionName="echo", Payload=exactly)
    assert resp["Payload"].read() == exactly
    with pytest.raises(client.exceptions.RequestTooLargeException) as info:
        client.invoke(FunctionName="echo", Payload=exactly + b" ")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    # Event invocations: 1 MB.
    event = b'"' + b"a" * (1048576 - 2) + b'"'
    assert client.invoke(FunctionName="echo", Payload=event,
                         InvocationType="Event")["StatusCode"] == 202
    with pytest.raises(client.exceptions.RequestTooLargeException):
        client.invoke(FunctionName="echo", Payload=event + b" ", InvocationType="Event")
    # The connection is still usable after the refused body.
    assert invoke(client, "echo", {"after": 413})[1] == {"after": 413}


def test_invalid_json_payload_is_invalid_request_content(client):
    with pytest.raises(client.exceptions.InvalidRequestContentException) as info:
        client.invoke(FunctionName="echo", Payload=b"{not json")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "Could not parse request body into json" in info.value.response["Error"]["Message"]


def test_reserved_concurrency_exceeded_is_too_many_requests(emu, client):
    results = []
    busy = threading.Thread(target=lambda: results.append(invoke(client, "single",
                                                                 {"seconds": 1.5})[1]))
    busy.start()
    try:
        deadline = time.monotonic() + 10
        while emu.stats()["in_flight"]["single"] < 1:
            assert time.monotonic() < deadline, "the slow invocation never started"
            time.sleep(0.01)
        throttles = emu.stats()["throttles"]["single"]
        with pytest.raises(client.exceptions.TooManyRequestsException) as info:
            client.invoke(FunctionName="single", Payload=b'{"seconds": 0}')
        err = info.value.response
        assert err["ResponseMetadata"]["HTTPStatusCode"] == 429
        assert err["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
        assert err["retryAfterSeconds"] == "1"
        assert emu.stats()["throttles"]["single"] == throttles + 1
    finally:
        busy.join()
    assert results == [{"slept": 1.5}]
    # The slot is free again.
    assert invoke(client, "single", {"seconds": 0})[1] == {"slept": 0.0}


def test_reserved_concurrency_zero_always_throttles(client):
    with pytest.raises(client.exceptions.TooManyRequestsException):
        client.invoke(FunctionName="zero", Payload=b"{}")


# -- Function errors

def test_handler_exception_is_unhandled_function_error(client):
    resp, body = invoke(client, "fail", {}, LogType="Tail")
    assert resp["StatusCode"] == 200
    assert resp["FunctionError"] == "Unhandled"
    assert resp["ExecutedVersion"] == "$LATEST"
    assert body["errorType"] == "ValueError"
    assert body["errorMessage"] == "boom"
    assert body["requestId"] == resp["ResponseMetadata"]["RequestId"]
    assert isinstance(body["stackTrace"], list) and body["stackTrace"]
    assert all(isinstance(line, str) for line in body["stackTrace"])
    assert 'raise ValueError("boom")' in body["stackTrace"][-1]
    assert "lambda_emulator" not in "".join(body["stackTrace"])       # no frame of the runtime
    assert "[ERROR] ValueError: boom\nTraceback (most recent call last):" in tail(resp)


def test_timeout_kills_the_worker_and_the_next_invocation_works(client):
    t0 = time.monotonic()
    resp, body = invoke(client, "sleepy", {"seconds": 30}, LogType="Tail")
    elapsed = time.monotonic() - t0
    assert 0.9 < elapsed < 5
    rid = resp["ResponseMetadata"]["RequestId"]
    assert resp["FunctionError"] == "Unhandled"
    assert re.match(rf"^\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z {rid} "
                    r"Task timed out after 1\.00 seconds$", body["errorMessage"])
    log = tail(resp)
    assert log.rstrip("\n").endswith(body["errorMessage"])
    pid = int(re.search(r"worker pid (\d+)", log).group(1))
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}"), "the timed-out worker is still running"
    resp, body = invoke(client, "sleepy", {"seconds": 0})
    assert "FunctionError" not in resp
    assert body != pid                              # a new worker


def test_example_slow_times_out_with_its_configured_timeout(client):
    resp, body = invoke(client, "slow", {})            # sleeps 5 s, timeout 1 s
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorMessage"].endswith("Task timed out after 1.00 seconds")


def test_crashing_handler_answers_exit_error_and_emulator_survives(client):
    resp, body = invoke(client, "crash", {"code": 3}, LogType="Tail")
    rid = resp["ResponseMetadata"]["RequestId"]
    assert resp["StatusCode"] == 200
    assert resp["FunctionError"] == "Unhandled"
    assert body == {"errorType": "Runtime.ExitError",
                    "errorMessage": f"RequestId: {rid} Error: Runtime exited with error: "
                                    "exit status 3"}
    assert "about to exit" in tail(resp)
    resp, body = invoke(client, "segv", {})
    assert body["errorType"] == "Runtime.ExitError"
    assert body["errorMessage"].endswith("Runtime exited with error: signal: segmentation fault")
    # Still serving, the crashed functions too (on new workers).
    assert invoke(client, "echo", {"still": "alive"})[1] == {"still": "alive"}
    resp, body = invoke(client, "crash", {"code": 0})
    assert body["errorMessage"].endswith("exit status 0")


def test_oversized_response_is_response_size_too_large(client):
    resp, body = invoke(client, "big", {"size": MAX_RESPONSE_BYTES - 1})   # 6291557 bytes as JSON
    assert resp["StatusCode"] == 200
    assert resp["FunctionError"] == "Unhandled"
    assert body == {"errorMessage": "Response payload size exceeded maximum allowed payload "
                                    "size (6291556 bytes).",
                    "errorType": "Function.ResponseSizeTooLarge"}
    resp = client.invoke(FunctionName="big", Payload=json.dumps({"size": MAX_RESPONSE_BYTES - 2}))
    assert "FunctionError" not in resp
    assert len(resp["Payload"].read()) == MAX_RESPONSE_BYTES


def test_unserializable_return_value_is_marshal_error(client):
    resp, body = invoke(client, "marshal", {})
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.MarshalError"
    assert body["errorMessage"].startswith("Unable to marshal response:")


def test_missing_handler_module_is_import_module_error(client):
    resp, body = invoke(client, "nomodule", {})
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.ImportModuleError"
    assert body["errorMessage"] == ("Unable to import module 'no_such_module': "
                                    "No module named 'no_such_module'")


# -- What the handler sees

def test_environment_variables_are_set_in_the_worker(client):
    names = ["GREETING", "EMPTY", "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
             "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_REGION", "_HANDLER"]
    env = invoke(client, "ctx", {"env": names})[1]["env"]
    assert env == {"GREETING": "hello from config", "EMPTY": "",
                   "AWS_LAMBDA_FUNCTION_NAME": "ctx", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
                   "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/ctx", "AWS_REGION": "us-east-1",
                   "_HANDLER": "handlers_emulator:context_info"}
    # Not leaked into other functions' workers nor into the emulator's process.
    assert invoke(client, "ctx", {"env": ["GREETING"]})[1]["env"]["GREETING"]
    assert "GREETING" not in os.environ


def test_context_object_fields(client):
    client_context = {"custom": {"tenant": "t1"}, "env": {"locale": "fr"},
                      "client": {"app_title": "tests", "installation_id": "i-1"}}
    resp, body = invoke(client, "ctx", {}, Qualifier="prod",
                        ClientContext=base64.b64encode(json.dumps(client_context).encode())
                        .decode())
    assert body["aws_request_id"] == resp["ResponseMetadata"]["RequestId"]
    assert body["function_name"] == "ctx"
    assert body["function_version"] == "$LATEST"
    assert body["invoked_function_arn"] == ARN + "ctx:prod"
    assert body["memory_limit_in_mb"] == "256"            # a string, as in Lambda's runtime
    assert 4000 < body["remaining_ms"] <= 5000
    assert body["log_group_name"] == "/aws/lambda/ctx"
    assert re.match(r"^\d{4}/\d\d/\d\d/\[\$LATEST\][0-9a-f]{32}$", body["log_stream_name"])
    assert body["identity"] == {"cognito_identity_id": None, "cognito_identity_pool_id": None}
    assert body["client_context"] == {"custom": {"tenant": "t1"}, "env": {"locale": "fr"},
                                      "client": {"app_title": "tests", "installation_id": "i-1"}}
    assert body["pid"] != os.getpid()
    # Warm: the same worker serves the next invocation (one at a time).
    assert invoke(client, "ctx", {})[1]["pid"] == body["pid"]
    assert invoke(client, "ctx", {})[1]["client_context"] is None


# -- Test support: stats, keep-alive, bad requests

def test_stats_count_invocations_errors_and_reset(emu, client):
    conn = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=10)
    try:
        resp, _ = exchange(conn, "POST", "/emulator/reset")
        assert resp.status == 200
        invoke(client, "echo", {})
        invoke(client, "echo", {})
        invoke(client, "fail", {})
        invoke(client, "echo", {}, InvocationType="DryRun")
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            client.invoke(FunctionName="unknown")
        resp, raw = exchange(conn, "GET", "/emulator/stats")
        stats = json.loads(raw)
        assert resp.status == 200
        assert stats["invocations"]["echo"] == 2 and stats["invocations"]["fail"] == 1
        assert stats["errors"] == dict.fromkeys(FUNCTIONS, 0) | {"fail": 1}
        assert sum(stats["invocations"].values()) == 3
        resp, raw = exchange(conn, "POST", "/emulator/reset")
        assert json.loads(raw)["invocations"] == dict.fromkeys(FUNCTIONS, 0)
        assert emu.stats()["errors"]["fail"] == 0
        resp, _ = exchange(conn, "POST", "/emulator/stats")
        assert resp.status == 405
    finally:
        conn.close()


def test_keep_alive_one_connection_for_two_invocations(emu):
    fresh = make_client(emu.url)
    before = emu.stats()["connections"]
    assert invoke(fresh, "echo", {"n": 1})[1] == {"n": 1}
    assert invoke(fresh, "fail", {})[0]["FunctionError"] == "Unhandled"
    with pytest.raises(fresh.exceptions.ResourceNotFoundException):
        fresh.invoke(FunctionName="nope")
    assert invoke(fresh, "echo", {"n": 2})[1] == {"n": 2}
    assert emu.stats()["connections"] == before + 1


def test_bad_requests_get_4xx_json_and_keep_the_connection_usable(emu):
    conn = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=10)
    invocations = "/2015-03-31/functions/echo/invocations"
    connections = emu.stats()["connections"]
    try:
        cases = [
            ("GET", "/nope", None, {}, 404, "UnknownOperationException"),
            ("GET", invocations, None, {}, 405, "MethodNotAllowedException"),
            ("POST", "/2015-03-31/functions/bad%20name/invocations", b"{}", {}, 400,
             "ValidationException"),
            ("POST", invocations, b"{}", {"X-Amz-Invocation-Type": "Sometimes"}, 400,
             "ValidationException"),
            ("POST", invocations, b"{}", {"X-Amz-Client-Context": "%%%"}, 400,
             "InvalidRequestContentException"),
            ("POST", invocations, b"[1,", {}, 400, "InvalidRequestContentException"),
        ]
        for method, path, body, headers, status, code in cases:
            resp, raw = exchange(conn, method, path, body, headers)
            assert (resp.status, resp.getheader("x-amzn-ErrorType")) == (status, code), path
            assert json.loads(raw)["Type"] == "User"
            assert UUID_RE.match(resp.getheader("x-amzn-RequestId"))
            resp, raw = exchange(conn, "POST", invocations, b'{"ok": 1}')
            assert (resp.status, raw) == (200, b'{"ok": 1}')
        assert emu.stats()["connections"] == connections + 1      # all on one connection
    finally:
        conn.close()
    # No Content-Length on a POST: 411, and the connection is closed (the body cannot be framed).
    conn = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=10)
    try:
        conn.putrequest("POST", invocations)
        conn.endheaders()
        resp = conn.getresponse()
        assert resp.status == 411
        assert resp.getheader("Connection") == "close"
        assert json.loads(resp.read())["Type"] == "User"
    finally:
        conn.close()
    # A malformed request line: 400, not a traceback.
    conn = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=10)
    try:
        conn.connect()
        conn.sock.sendall(b"NONSENSE\r\n\r\n")
        data = conn.sock.recv(65536)
        assert data.startswith(b"HTTP/1.1 400 ") or data.startswith(b"HTTP/1.0 400 ")
        assert b"Traceback" not in data
    finally:
        conn.close()


# -- Lifecycle, Python API and command line

def test_stop_ends_workers_and_closes_connections():
    emulator = Emulator({"ctx": th("context_info")}).start()
    c = make_client(emulator.url)
    pid = invoke(c, "ctx", {})[1]["pid"]
    assert os.path.exists(f"/proc/{pid}")
    emulator.stop()
    assert not os.path.exists(f"/proc/{pid}")
    with pytest.raises(OSError):
        http.client.HTTPConnection("127.0.0.1", emulator.port, timeout=2).request("GET", "/")
    emulator.stop()                                        # idempotent


def test_spawn_start_method_works_too():
    with Emulator({"echo": app("echo"), "crash": th("crash")}, start_method="spawn") as spawned:
        c = make_client(spawned.url)
        assert invoke(c, "echo", {"spawn": 1})[1] == {"spawn": 1}
        assert invoke(c, "crash", {"code": 4})[1]["errorMessage"].endswith("exit status 4")
        assert invoke(c, "echo", {"spawn": 2})[1] == {"spawn": 2}


def test_python_api_validates_its_arguments():
    with pytest.raises(EmulatorConfigError, match="loopback"):
        Emulator({"echo": app("echo")}, host="0.0.0.0")
    with pytest.raises(EmulatorConfigError, match="module:function"):
        Emulator({"echo": FunctionConfig("no_function_here")})
    with pytest.raises(EmulatorConfigError, match="timeout"):
        Emulator({"echo": app("echo", timeout=0)})
    with pytest.raises(EmulatorConfigError, match="name"):
        Emulator({"bad name": app("echo")})
    emulator = Emulator({"echo": "app:echo", "hello": {"handler": "app.hello", "timeout": 2}},
                        paths=[EXAMPLES])
    assert emulator.functions["echo"].timeout == 3.0
    assert emulator.functions["hello"].timeout == 2.0
    assert emulator.url.startswith("http://127.0.0.1:")


def test_config_file_paths_are_relative_to_it(tmp_path):
    cfg = tmp_path / "functions.json"
    cfg.write_text(json.dumps({"functions": {
        "echo": {"handler": "app:echo", "path": [os.path.relpath(EXAMPLES, tmp_path)],
                 "environment": {"K": "V"}, "reserved_concurrency": 2, "memory_size": 512}}}))
    functions, paths = load_config(str(cfg))
    assert functions["echo"].path == [EXAMPLES]
    assert functions["echo"].environment == {"K": "V"}
    assert functions["echo"].reserved_concurrency == 2
    cfg.write_text(json.dumps({"functions": {"echo": {"handler": "app:echo", "tmeout": 3}}}))
    with pytest.raises(EmulatorConfigError, match="tmeout"):
        load_config(str(cfg))


def test_command_line_serves_config_and_stops_on_sigterm(tmp_path):
    cfg = tmp_path / "functions.json"
    cfg.write_text(json.dumps({"functions": {
        "ctx": {"handler": "handlers_emulator:context_info", "path": [HANDLERS],
                "environment": {"FROM_CONFIG": "yes"}}}}))
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "lambda_emulator", "--port", "0", "--config", str(cfg),
         "--path", EXAMPLES, "--function", "echo=app:echo", "hello=app:hello"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(tmp_path))
    try:
        url = proc.stdout.readline().strip()
        assert re.match(r"^http://127\.0\.0\.1:\d+$", url), proc.stderr.read()
        assert url != "http://127.0.0.1:0"
        c = make_client(url)
        assert invoke(c, "echo", {"cli": True})[1] == {"cli": True}
        assert invoke(c, "hello", {"rawPath": "/x"})[1]["statusCode"] == 200
        body = invoke(c, "ctx", {"env": ["FROM_CONFIG"]})[1]
        assert body["env"] == {"FROM_CONFIG": "yes"}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        err = proc.stderr.read()
        assert "Traceback" not in err
        assert "function ctx: handlers_emulator:context_info" in err
        assert "[echo] START RequestId: " in err                # function logs echoed
        assert not os.path.exists(f"/proc/{body['pid']}")      # workers ended with it
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_command_line_refuses_non_loopback_host():
    env = dict(os.environ, PYTHONPATH=ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "lambda_emulator", "--host", "0.0.0.0", "--port", "0",
         "echo=app:echo"], capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 2
    assert "loopback" in result.stderr
    assert result.stdout == ""


def test_request_ids_are_fresh_uuid4(client):
    ids = {invoke(client, "echo", {})[0]["ResponseMetadata"]["RequestId"] for _ in range(3)}
    assert len(ids) == 3
    assert all(uuid.UUID(i).version == 4 for i in ids)


def test_accepted_connections_send_without_nagles_delay(emu):
    """A streamed answer goes out in small pieces as the function writes them: the emulator's side
    of every connection has TCP_NODELAY, or a piece written while the previous one is unacknowledged
    waits for the client's delayed ACK (40 ms on a kept-alive connection; BENCHMARKS.md, case s)."""
    import http.client
    import socket
    from urllib.parse import urlsplit
    u = urlsplit(emu.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        conn.request("GET", "/2015-03-31/functions/none/configuration")
        conn.getresponse().read()
        with emu._lock:
            socks = list(emu._connections)
        assert socks
        assert all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in socks), socks
    finally:
        conn.close()
