"""The request and response records (vmod_lambda/_request.pyx, _response.pyx): what the director
collects from bo->bereq and what it writes into beresp, as the worker's side sees them."""

import pytest

from vmod_lambda.fetch import FetchResult

_response = pytest.importorskip("vmod_lambda._response", reason="the Cython modules are not built")


def test_response_record_keeps_order_repeats_and_lines():
    status, reason, headers, head_bytes, body = _response.round_trip(FetchResult(
        201, "Made", [("Set-Cookie", "a=1"), ("X-N", 7), ("Set-Cookie", "b=2")], b"\0body"))
    assert (status, reason, body) == (201, "Made", b"\0body")
    # each header is the "Name: value" line http_SetHeader takes, name and value within it
    assert headers == [("Set-Cookie", "a=1", "Set-Cookie: a=1"), ("X-N", "7", "X-N: 7"),
                       ("Set-Cookie", "b=2", "Set-Cookie: b=2")]
    assert head_bytes == sum(len(line) + 1 for _, _, line in headers)     # beresp_hdrbytes


def test_streamed_response_record_has_no_body():
    assert _response.round_trip(FetchResult(200, None, [], b"first"), True) == \
        (200, None, [], 0, None)
