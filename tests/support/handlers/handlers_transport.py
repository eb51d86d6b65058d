"""Lambda handlers for tests/unit/test_transport.py; they run in the emulator's worker processes."""

import time


def echo(event, context):
    """The event back."""
    return event


def fail(event, context):
    raise ValueError("boom")


def slow(event, context):
    """After event["seconds"] seconds."""
    time.sleep(float(event.get("seconds", 3)))
    return "late"
