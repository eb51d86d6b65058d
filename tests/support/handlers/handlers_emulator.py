"""Lambda handlers for tests/emulator/test_emulator.py; they run in the emulator's worker processes."""

import logging
import os
import sys
import time

print("handlers_emulator: module imported")      # init output, before the first START


def context_info(event, context):
    """The context object and some environment variables, as JSON."""
    cc = context.client_context
    return {
        "aws_request_id": context.aws_request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "identity": {"cognito_identity_id": context.identity.cognito_identity_id,
                     "cognito_identity_pool_id": context.identity.cognito_identity_pool_id},
        "client_context": None if cc is None else {
            "custom": cc.custom, "env": cc.env,
            "client": None if cc.client is None else {
                "app_title": cc.client.app_title, "installation_id": cc.client.installation_id}},
        "env": {name: os.environ.get(name) for name in (event or {}).get("env", [])},
        "pid": os.getpid(),
    }


def chatty(event, context):
    """Write to the log every way a handler can."""
    print("to stdout via print")
    print("to stderr via print", file=sys.stderr)
    logging.getLogger("chatty").warning("a logged warning")
    logging.getLogger("chatty").info("an info record, below the default level")
    os.write(1, b"straight to file descriptor 1\n")
    for i in range(int(event.get("lines", 0)) if isinstance(event, dict) else 0):
        print(f"line {i:05d} " + "." * 90)
    return "done"


def crash(event, context):
    """Exit the worker process, as a crashing runtime would."""
    print("about to exit", flush=True)
    os._exit(int(event.get("code", 1)))


def segfault(event, context):
    import ctypes
    ctypes.string_at(0)


def sleep_pid(event, context):
    """Report the worker's pid in the log, then sleep."""
    print(f"worker pid {os.getpid()}", flush=True)
    time.sleep(float(event.get("seconds", 30)))
    return os.getpid()


def unserializable(event, context):
    return {1, 2}


def record(event, context):
    """After event["sleep"] seconds, write the event's text to the file it names."""
    time.sleep(float(event.get("sleep", 0)))
    with open(event["file"], "w") as f:
        f.write(f"{os.getpid()} {context.aws_request_id} {event['text']}")
    return None


# ---- response streaming (InvokeWithResponseStream)

from lambda_emulator import HttpResponseStream, streamify_response  # noqa: E402


@streamify_response
def stream_chunks(event, response_stream, context):
    """event: {"n": chunks, "size": bytes each, "delay": seconds before each chunk after the first,
    "text": what each chunk repeats}."""
    response_stream.set_content_type("text/plain")
    fill = str(event.get("text", "x")).encode()
    for i in range(int(event.get("n", 3))):
        if i and event.get("delay"):
            time.sleep(float(event["delay"]))
        part = (fill * (int(event.get("size", 10)) // max(1, len(fill)) + 1))[:int(event.get("size", 10))]
        response_stream.write(part)
    response_stream.end()


@streamify_response
def stream_http(event, response_stream, context):
    """An HTTP-integration response: the prelude from event["prelude"], then event["parts"]
    (latin-1 strings, so any byte), with event["delay"] seconds between parts."""
    stream = HttpResponseStream.from_(response_stream, event.get("prelude", {"statusCode": 200}))
    for i, part in enumerate(event.get("parts", [])):
        if i and event.get("delay"):
            time.sleep(float(event["delay"]))
        stream.write(part.encode("latin-1"))
    stream.end()


@streamify_response
def stream_error(event, response_stream, context):
    """Writes some bytes, then fails."""
    response_stream.write(b"partial output ")
    response_stream.write(b"then")
    if event.get("delay"):
        time.sleep(float(event["delay"]))
    raise ValueError("boom mid-stream")


@streamify_response
def stream_fault(event, response_stream, context):
    """Writes "before", asks the emulator for a fault (event["fault"], event["options"]), then
    writes "after"."""
    response_stream.write(b"before")
    response_stream.fault(event["fault"], **event.get("options", {}))
    response_stream.write(b"after")
    time.sleep(float(event.get("sleep_after", 0)))


def _pattern(i, size):
    """Deterministic content of chunk i (the reader can check every byte)."""
    return (b"%08d" % i) * (size // 8)


def big_chunks(n, size):
    for i in range(n):
        yield _pattern(i, size)


@streamify_response
def stream_big(event, response_stream, context):
    """event["mb"] MiB from a generator, in 64 KiB writes, never held in memory at once."""
    size = 65536
    for chunk in big_chunks(int(event.get("mb", 1)) * 16, size):
        response_stream.write(chunk)
    print(f"streamed {event.get('mb', 1)} MiB")
