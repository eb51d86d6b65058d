"""Example Lambda handlers for vmod-lambda demos and tests (standard library only).

Serve them locally with the emulator:

    python -m lambda_emulator --path examples echo=app:echo hello=app:hello \
        fail=app:fail slow=app:slow big=app:big

    echo   returns the event unchanged
    hello  an HTTP response for API Gateway (REST 1.0 and HTTP 2.0 payloads) and ALB events
    fail   raises ValueError("boom")
    slow   sleeps event["seconds"] (default 5), then returns {"slept": seconds}
    big    returns a string of event["size"] bytes
"""

import html
import time


def echo(event, context):
    """Return the event as received."""
    return event


def hello(event, context):
    """A small HTML page, as an HTTP response that API Gateway (1.0 and 2.0) and ALB understand."""
    event = event if isinstance(event, dict) else {}
    path = event.get("rawPath") or event.get("path") or "/"
    body = ("<h1>Hello from Lambda</h1>\n"
            f"<p>You asked for <code>{html.escape(str(path))}</code>.</p>\n")
    response = {
        "statusCode": 200,
        "headers": {"content-type": "text/html"},
        "body": body,
        "isBase64Encoded": False,
    }
    if "elb" in (event.get("requestContext") or {}):
        response["statusDescription"] = "200 OK"     # required by ALB
    return response


def fail(event, context):
    """Always raise: the invocation answers with a function error."""
    raise ValueError("boom")


def slow(event, context):
    """Sleep event["seconds"] seconds (default 5): for timeouts and concurrency limits."""
    seconds = float(event.get("seconds", 5)) if isinstance(event, dict) else 5.0
    time.sleep(seconds)
    return {"slept": seconds}


def big(event, context):
    """A string of event["size"] bytes: for payload size limits."""
    return "x" * int(event["size"])
