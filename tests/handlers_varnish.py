"""Handlers for the tests that run varnishd in front of the emulator."""

import time


def slow_page(event, context):
    """A cacheable page that takes a while: concurrent misses must coalesce onto one invocation."""
    time.sleep(1.0)
    return {"statusCode": 200,
            "headers": {"content-type": "text/plain", "cache-control": "max-age=60"},
            "body": f"rendered for {event.get('path') or event.get('rawPath')}"}
