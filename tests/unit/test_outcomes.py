"""The one table of failure kinds and limits (vmod_lambda/outcomes.py, limits.py): how each kind is
counted and logged, and the messages that name a limit, as the counters and logs have them."""

import pytest

from vmod_lambda import invoker, limits, outcomes


@pytest.mark.parametrize("kind,status,sent,counter", [
    ("function_error", 200, True, "function_error"),
    ("timeout", None, True, "timeout"),
    ("throttled", 429, True, "throttled"),
    ("service", 500, True, "err_5xx"),
    ("service", 503, True, "err_5xx"),
    ("service", None, True, "err_5xx"),
    ("service", 404, True, "err_4xx"),
    ("transport", None, True, "conn_fail"),
    ("invalid_response", 200, True, "invalid"),
    ("payload", 200, True, "invalid"),
    ("payload", None, False, "too_large"),
    ("credentials", None, False, None),
    ("internal", None, True, "internal"),
    ("no-such-kind", None, True, None),
])
def test_each_kind_moves_its_counter(kind, status, sent, counter):
    assert outcomes.counter(kind, status, sent) == counter


@pytest.mark.parametrize("kind,status,word", [
    (None, None, "ok"),
    ("service", 502, "service_5xx"),
    ("service", 403, "service_4xx"),
    ("service", None, "service_5xx"),
    ("timeout", None, "timeout"),
    ("internal", None, "internal"),
    ("busy", None, "busy"),
])
def test_each_kind_has_its_word_in_the_log_record(kind, status, word):
    assert outcomes.outcome(kind, status) == word


def test_every_kind_counts_in_a_real_counter_or_in_fail_only():
    vsc = open("include/VSC_lambda.vsc").read()
    for kind in outcomes.KINDS.values():
        assert kind.counter is None or f".. varnish_vsc:: {kind.counter}\n" in vsc, kind


def test_the_limits_are_lambdas_quotas_and_invoker_uses_them():
    assert limits.MAX_PAYLOAD == 6 * 1024 * 1024 == invoker.MAX_PAYLOAD
    assert limits.MAX_ASYNC_PAYLOAD == 1024 * 1024 == invoker.MAX_ASYNC_PAYLOAD
    assert limits.MAX_REQUEST_BODY == limits.MAX_PAYLOAD


def test_the_messages_that_name_a_limit():
    assert outcomes.payload_too_large(7000000) == (
        "payload of 7000000 bytes exceeds the 6 MB limit of synchronous invocations; not sent")
    assert outcomes.payload_too_large(2000000, asynchronous=True) == (
        "payload of 2000000 bytes exceeds the 1 MB limit of asynchronous invocations; not sent")
    body, note = outcomes.event_too_large("request body", 7000000)
    assert body == b"413 Request Entity Too Large: the Lambda event would exceed 6 MB\n"
    assert note == ("request body of 7000000 bytes exceeds the 6 MB limit of synchronous "
                    "invocations: answered 413 without invoking")


def test_late_answers_have_a_counter_of_their_own():
    vsc = open("include/VSC_lambda.vsc").read()
    assert f".. varnish_vsc:: {outcomes.LATE}\n" in vsc
    assert outcomes.LATE not in {k.counter for k in outcomes.KINDS.values()}
