"""Handlers for the tests that run varnishd in front of the emulator."""

import time


def slow_page(event, context):
    """A cacheable page that takes a while: concurrent misses must coalesce onto one invocation."""
    time.sleep(1.0)
    return {"statusCode": 200,
            "headers": {"content-type": "text/plain", "cache-control": "max-age=60"},
            "body": f"rendered for {event.get('path') or event.get('rawPath')}"}


def chatty_page(event, context):
    """Logs the request's headers (a credential among them) and answers: for log_tail."""
    import json
    print(f"handling {event.get('path')}")
    print(json.dumps({"headers": event.get("headers") or {}}, sort_keys=True))
    return {"statusCode": 200, "headers": {"content-type": "text/plain"}, "body": "chatty"}
