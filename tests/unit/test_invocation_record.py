"""The invocation record (vmod_lambda/_record.pxd): answer() is the one reader of a Lambda answer's
x-amz-* headers, for both transports; the billing comes from the log tail once, when it is set."""

import base64

from vmod_lambda.invoker import InvocationRecord

TAIL = base64.b64encode(b"START RequestId: r1\nREPORT RequestId: r1\tDuration: 1.50 ms\t"
                        b"Billed Duration: 7 ms\tMemory Size: 128 MB\tInit Duration: 99.1 ms\n"
                        ).decode()


def test_answer_maps_the_headers_once():
    rec = InvocationRecord("RequestResponse", None, 3)
    fe = rec.answer(200, {"x-amzn-requestid": "req-1", "x-amz-executed-version": "4",
                          "x-amz-log-result": TAIL, "x-amz-function-error": "Unhandled"}, 11)
    assert fe == "Unhandled" == rec.function_error
    assert (rec.status, rec.request_id, rec.executed_version, rec.received, rec.sent) == \
        (200, "req-1", "4", 11, 3)
    assert rec.log_result == TAIL and (rec.billed_ms, rec.cold) == (7, True)


def test_answer_without_the_optional_headers():
    rec = InvocationRecord("Event", "live", 2)
    assert rec.answer(202, {"x-amz-request-id": "req-2", "x-amz-function-error": ""}, 0) is None
    assert (rec.request_id, rec.executed_version, rec.log_result, rec.function_error) == \
        ("req-2", None, None, None)
    assert (rec.billed_ms, rec.cold, rec.qualifier) == (0, False, "live")


def test_a_log_tail_set_later_is_billed_then():
    """A streamed answer's tail comes with its last event (fetch.StreamedFetch.close)."""
    rec = InvocationRecord("RequestResponse", None, 0, trace_id="Root=1-x")
    rec.answer(200, {}, 0)
    assert rec.billed_ms == 0
    rec.log_result = TAIL
    assert (rec.billed_ms, rec.cold) == (7, True)
    rec.log_result = None
    assert (rec.billed_ms, rec.cold) == (0, False)
