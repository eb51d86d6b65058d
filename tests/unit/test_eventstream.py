"""vmod_lambda.eventstream: the event stream decoder, Lambda's stream events and the HTTP prelude.

The encoder (the emulator's, lambda_emulator.eventstream) is checked against botocore's own decoder,
the decoder against hand-built frames and against every way of splitting a stream into reads.
"""

import json
import random
import struct
from binascii import crc32

import pytest
from botocore.eventstream import EventStreamBuffer

from lambda_emulator.eventstream import (encode_message, encode_prelude, exception_message,
                                         invoke_complete, payload_chunk)
from vmod_lambda.eventstream import (ChecksumError, Decoder, FrameError, LambdaStream,
                                     LambdaStreamError, PRELUDE_DELIMITER, Prelude, PreludeError,
                                     PreludeParser, TruncatedError)


def frame(headers_blob: bytes, payload: bytes, total=None, hlen=None) -> bytes:
    """A message built by hand, with correct CRCs for whatever lengths are given."""
    total = 16 + len(headers_blob) + len(payload) if total is None else total
    hlen = len(headers_blob) if hlen is None else hlen
    head = struct.pack(">II", total, hlen)
    msg = head + struct.pack(">I", crc32(head)) + headers_blob + payload
    return msg + struct.pack(">I", crc32(msg))


# ---- framing

def test_encoded_messages_decode_with_botocore():
    buf = EventStreamBuffer()
    buf.add_data(payload_chunk(b"hello \x00 world") + invoke_complete(log_result="dGFpbA==")
                 + encode_message({"b": True, "f": False, "i": -7, "s": "text", "x": b"\x01\x02"},
                                  b""))
    msgs = list(buf)
    assert msgs[0].headers == {":event-type": "PayloadChunk",
                               ":content-type": "application/octet-stream",
                               ":message-type": "event"}
    assert msgs[0].payload == b"hello \x00 world"
    assert json.loads(msgs[1].payload) == {"LogResult": "dGFpbA=="}
    assert msgs[2].headers == {"b": True, "f": False, "i": -7, "s": "text", "x": b"\x01\x02"}


def test_decoder_reads_every_header_type():
    blob = b"".join([
        b"\x01t\x00", b"\x01f\x01", b"\x02i1\x02\xff", b"\x02i2\x03\x01\x00",
        b"\x02i4\x04" + struct.pack(">i", -5), b"\x02i8\x05" + struct.pack(">q", 1 << 40),
        b"\x02by\x06\x00\x03a\x00b", b"\x02st\x07\x00\x03\xc3\xa9!",
        b"\x02ts\x08" + struct.pack(">q", 1700000000000), b"\x02id\x09" + bytes(range(16)),
    ])
    (msg,) = Decoder().feed(frame(blob, b"payload"))
    assert msg.headers == {"t": True, "f": False, "i1": -1, "i2": 256, "i4": -5, "i8": 1 << 40,
                           "by": b"a\x00b", "st": "é!", "ts": 1700000000000,
                           "id": bytes(range(16))}
    assert msg.payload == b"payload"


def test_any_split_of_the_stream_gives_the_same_messages():
    chunks = [bytes(random.Random(i).randbytes(i * 37)) for i in range(12)]
    stream = b"".join(payload_chunk(c) for c in chunks) + invoke_complete()
    rng = random.Random(7)
    for _ in range(200):
        d = Decoder()
        got, pos = [], 0
        while pos < len(stream):
            n = rng.choice((1, 2, 3, 11, 16, 100, 4096))
            got += d.feed(stream[pos:pos + n])
            pos += n
        d.close()
        assert [m.payload for m in got[:-1]] == chunks
        assert d.buffered == 0
    # all at once, and byte by byte
    assert len(Decoder().feed(stream)) == 13
    d = Decoder()
    assert sum(len(d.feed(stream[i:i + 1])) for i in range(len(stream))) == 13


@pytest.mark.parametrize("where", ["prelude", "message"])
def test_a_bad_crc_is_a_checksum_error_and_sticks(where):
    d = Decoder()
    assert len(d.feed(payload_chunk(b"good"))) == 1
    with pytest.raises(ChecksumError, match=f"{where} CRC mismatch in message 2"):
        d.feed(payload_chunk(b"bad", corrupt=where))
    with pytest.raises(ChecksumError):
        d.feed(payload_chunk(b"good again"))


def test_a_flipped_payload_byte_fails_the_message_crc():
    data = bytearray(payload_chunk(b"x" * 100))
    data[60] ^= 0x20
    with pytest.raises(ChecksumError, match="message CRC"):
        Decoder().feed(bytes(data))


def test_limits_are_checked_from_the_prelude_before_buffering():
    d = Decoder(max_payload=1000, max_headers=100)
    # Only the 12-byte prelude announces 10 MB: refused at once, nothing more is waited for.
    head = struct.pack(">II", 10_000_000, 0)
    with pytest.raises(FrameError, match="payload of 9999984 bytes exceeds the limit of 1000"):
        d.feed(head + struct.pack(">I", crc32(head)))
    head = struct.pack(">II", 1000, 200)
    with pytest.raises(FrameError, match="headers of 200 bytes exceed the limit of 100"):
        Decoder(max_headers=100).feed(head + struct.pack(">I", crc32(head)))


def test_inconsistent_lengths_and_bad_headers_are_frame_errors():
    with pytest.raises(FrameError, match="shorter than its headers"):
        Decoder().feed(frame(b"", b"", total=15, hlen=0))
    with pytest.raises(FrameError, match="shorter than its headers"):
        Decoder().feed(frame(b"\x01a\x00", b"", total=18, hlen=3))
    with pytest.raises(FrameError, match="unknown value type 42"):
        Decoder().feed(frame(b"\x01a\x2a", b""))
    with pytest.raises(FrameError, match="out of bounds"):
        Decoder().feed(frame(b"\x01a\x07\x00\x09abc", b""))
    with pytest.raises(FrameError, match="name length"):
        Decoder().feed(frame(b"\x00", b""))
    with pytest.raises(FrameError, match="duplicate header"):
        Decoder().feed(frame(b"\x01a\x00\x01a\x01", b""))
    with pytest.raises(FrameError, match="not UTF-8"):
        Decoder().feed(frame(b"\x01a\x07\x00\x01\xff", b""))


def test_a_stream_cut_inside_a_message_is_truncated():
    data = payload_chunk(b"complete") + payload_chunk(b"cut short")
    d = Decoder()
    assert len(d.feed(data[:-5])) == 1
    with pytest.raises(TruncatedError, match="inside message 2"):
        d.close()
    d = Decoder()
    d.feed(data[:5])
    with pytest.raises(TruncatedError, match="at least 12"):
        d.close()
    Decoder().close()        # nothing at all is not truncated framing


def test_decoder_memory_is_one_message():
    d = Decoder()
    big = payload_chunk(b"z" * 200_000)
    for _ in range(50):
        for i in range(0, len(big), 8192):
            d.feed(big[i:i + 8192])
            assert d.buffered < len(big)
    assert d.buffered == 0 and d.messages == 50


# ---- Lambda events

def test_lambda_stream_yields_chunks_then_completion():
    ls = LambdaStream()
    evs = ls.feed(payload_chunk(b"a") + payload_chunk(b"") + payload_chunk(b"bc")
                  + encode_message({":message-type": "event", ":event-type": "SomethingNew"}, b"?")
                  + invoke_complete(log_result="bG9n"))
    assert [(e.kind, e.data) for e in evs] == [("chunk", b"a"), ("chunk", b"bc"), ("complete", b"")]
    assert evs[-1].error_code is None and evs[-1].log_result == "bG9n"
    ls.close()


def test_lambda_stream_reports_an_error_in_invoke_complete():
    ls = LambdaStream()
    (ev,) = ls.feed(invoke_complete("ValueError", '{"errorMessage": "boom"}'))
    assert ev.error_code == "ValueError" and "boom" in ev.error_details


def test_lambda_stream_without_invoke_complete_is_truncated():
    ls = LambdaStream()
    ls.feed(payload_chunk(b"partial"))
    with pytest.raises(TruncatedError, match="without InvokeComplete"):
        ls.close()


def test_lambda_stream_rejects_exceptions_and_trailing_messages():
    with pytest.raises(LambdaStreamError, match="ServiceException in the stream: it broke"):
        LambdaStream().feed(exception_message("ServiceException", "it broke"))
    with pytest.raises(LambdaStreamError, match="after InvokeComplete"):
        LambdaStream().feed(invoke_complete() + payload_chunk(b"late"))
    with pytest.raises(LambdaStreamError, match="message-type"):
        LambdaStream().feed(encode_message({":event-type": "PayloadChunk"}, b"x"))
    with pytest.raises(LambdaStreamError, match="not JSON"):
        LambdaStream().feed(encode_message({":message-type": "event",
                                            ":event-type": "InvokeComplete"}, b"{nope"))


# ---- the HTTP-integration prelude

def feed_all(parser, data, step):
    for i in range(0, len(data), step):
        r = parser.feed(data[i:i + step])
        if r is not None:
            return r, data[i + step:]
    return parser.finish(), b""


@pytest.mark.parametrize("step", [1, 7, 8, 9, 1000])
def test_prelude_sets_status_headers_cookies_and_keeps_a_binary_body(step):
    body = b"\x00\x00\x00binary\x00\xff" + bytes(range(256))
    data = encode_prelude(201, {"Content-Type": "application/octet-stream", "X-N": 5},
                          ["a=1; Path=/", "b=2"]) + body
    (prelude, first), rest = feed_all(PreludeParser(), data, step)
    assert prelude == Prelude(201, [("Content-Type", "application/octet-stream"), ("X-N", "5"),
                                    ("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2")])
    assert first + rest == body


def test_prelude_defaults_and_string_status():
    (prelude, body) = PreludeParser().feed(b'{}' + PRELUDE_DELIMITER + b"x")
    assert prelude == Prelude(200, []) and body == b"x"
    (prelude, body) = PreludeParser().feed(b'{"statusCode":"404"}' + PRELUDE_DELIMITER)
    assert prelude.status == 404 and body == b""


@pytest.mark.parametrize("payload", [
    b'{"statusCode": 200, "body": "a JSON payload, no NULs"}',
    b"plain text",
    b"",
    b"\x00" * 16,
    b"{not json" + PRELUDE_DELIMITER + b"binary that starts with a brace",
])
def test_anything_else_is_a_plain_body(payload):
    p = PreludeParser()
    r = p.feed(payload)
    if r is None:
        r = p.finish()
    assert r == (None, payload)


def test_undecided_past_max_prelude_is_a_plain_body():
    p = PreludeParser(max_prelude=100)
    assert p.feed(b"{" + b" " * 50) is None
    prelude, body = p.feed(b" " * 100)
    assert prelude is None and body == b"{" + b" " * 150


@pytest.mark.parametrize("prelude,match", [
    (b'{"statusCode": 700}', "statusCode 700 is not in 100-599"),
    (b'{"statusCode": 101}', "interim"),
    (b'{"statusCode": 200, "headers": {"X-A": "a\\r\\nInjected: 1"}}', "CR, LF, NUL"),
    (b'{"statusCode": 200, "headers": {"Bad Name": "v"}}', "not a valid token"),
    (b'{"statusCode": 200, "headers": []}', "headers is a list"),
    (b'{"statusCode": 200, "cookies": [1]}', "cookies item 1 is not a string"),
])
def test_a_bad_prelude_is_an_error(prelude, match):
    with pytest.raises(PreludeError, match=match):
        PreludeParser().feed(prelude + PRELUDE_DELIMITER + b"body")


def test_prelude_hop_by_hop_headers_are_dropped():
    prelude, _ = PreludeParser().feed(encode_prelude(200, {"Content-Length": "5",
                                                           "Transfer-Encoding": "chunked",
                                                           "X-Keep": "1"}))
    assert prelude.headers == [("X-Keep", "1")]


def test_expected_prelude_must_be_there():
    p = PreludeParser(max_prelude=50, expect=True)
    with pytest.raises(PreludeError, match="no prelude delimiter"):
        p.feed(b"x" * 100)
    p = PreludeParser(expect=True)
    p.feed(b"{}")
    with pytest.raises(PreludeError, match="ended before"):
        p.finish()
