"""The streamed path's decoders (vmod_lambda.eventstream.Decoder and the direct transport's
ChunkedDecoder, compiled) give what they gave before they were made to copy less (issue 17): for
a corpus of good and damaged streams, cut into reads at every offset and in random sizes, each
feed() returns the same pieces or messages as the frozen reference (tests/support/
stream_reference.py), raises the same error with the same text, and leaves the same bytes
buffered."""

import random
import struct
from binascii import crc32

import pytest

from lambda_emulator.eventstream import (encode_message, exception_message, invoke_complete,
                                         payload_chunk)
from support import stream_reference as ref
from vmod_lambda import eventstream
from vmod_lambda.transport import direct


def _frames():
    rng = random.Random(17)
    big = rng.randbytes(70000)
    good = (payload_chunk(b"hello") + payload_chunk(b"") + payload_chunk(big[:4096])
            + payload_chunk(big) + invoke_complete())
    bad_total = bytearray(payload_chunk(b"xyz"))
    bad_total[0:4] = struct.pack(">I", 8)                     # shorter than its own framing
    bad_total[8:12] = struct.pack(">I", crc32(bytes(bad_total[:8])))
    huge_hdr = bytearray(payload_chunk(b"xyz"))
    huge_hdr[4:8] = struct.pack(">I", 200 * 1024)              # headers beyond the limit
    huge_hdr[8:12] = struct.pack(">I", crc32(bytes(huge_hdr[:8])))
    huge_payload = struct.pack(">II", 30 << 20, 0)            # an oversized prelude
    huge_payload += struct.pack(">I", crc32(huge_payload))
    bad_header_type = encode_message([("x", "y")], b"p")
    bad_header_type = bytearray(bad_header_type)
    bad_header_type[12 + 2] = 42                               # unknown value type
    body = bytes(bad_header_type[:-4])
    bad_header_type[-4:] = struct.pack(">I", crc32(body))
    return {
        "good": good,
        "prelude_crc": payload_chunk(b"a") + payload_chunk(big[:300], corrupt="prelude"),
        "message_crc": payload_chunk(big[:5000]) + payload_chunk(big[:70000], corrupt="message"),
        "short_total": payload_chunk(b"a") + bytes(bad_total),
        "huge_headers": bytes(huge_hdr),
        "oversized_prelude": payload_chunk(b"a") + huge_payload + b"\0" * 64,
        "bad_header_type": payload_chunk(b"a") + bytes(bad_header_type),
        "truncated": good[:-7],
        "exception": payload_chunk(b"a") + exception_message("ServiceException", "boom"),
        "all_header_types": encode_message([("b", True), ("f", False), ("i", 7), ("s", "str"),
                                            ("y", b"\x00\x01")], b"p") + invoke_complete(),
    }


FRAMES = _frames()


def _decode(cls, stream, cuts):
    """[(what feed() returned or raised, buffered)] for each read, then close()'s outcome."""
    dec = cls()
    log = []
    pos = 0
    for cut in cuts + [len(stream)]:
        try:
            got = [(m.headers, bytes(m.payload)) for m in dec.feed(stream[pos:cut])]
        except eventstream.EventStreamError as e:
            got = (type(e).__name__, str(e))
        log.append((got, dec.buffered))
        pos = cut
    try:
        dec.close()
        log.append("closed")
    except eventstream.EventStreamError as e:
        log.append((type(e).__name__, str(e)))
    return log


def _cut_sets(n, rng):
    yield []
    for at in range(1, n):              # one cut at every offset
        yield [at]
    for _ in range(60):                 # random reads, small and large
        cuts, pos = [], 0
        while True:
            pos += rng.choice((1, 2, 3, 11, 12, 13, 16, 100, 4096, 65536, 65549, 196608))
            if pos >= n:
                break
            cuts.append(pos)
        yield cuts


@pytest.mark.parametrize("name", sorted(FRAMES))
def test_the_event_stream_decoder_matches_the_reference_at_every_cut(name):
    stream = FRAMES[name]
    rng = random.Random(name)
    n = len(stream)
    sets = list(_cut_sets(n, rng))
    if n > 3000:        # every offset of the big streams near the frame boundaries only
        bounds = [0]
        dec = ref.Decoder()
        for m in dec.feed(stream) if name == "good" else []:
            bounds.append(bounds[-1] + 16 + len(m.payload) + len(_hdr_bytes(m.headers)))
        near = {b + d for b in bounds + [n // 2] for d in range(-20, 21) if 0 < b + d < n}
        sets = [s for s in sets if len(s) != 1 or s[0] in near or s[0] % 997 == 0]
    for cuts in sets:
        assert _decode(eventstream.Decoder, stream, cuts) == _decode(ref.Decoder, stream, cuts), \
            (name, cuts)


def _hdr_bytes(headers):
    return encode_message(headers, b"")[12:-4]


def test_the_decoder_reads_in_place_and_keeps_only_the_unfinished_message():
    stream = payload_chunk(b"a" * 100) + payload_chunk(b"b" * 100)
    dec = eventstream.Decoder()
    msgs = dec.feed(stream[:-10])
    assert [m.payload for m in msgs] == [b"a" * 100] and type(msgs[0].payload) is bytes
    assert dec.buffered == len(payload_chunk(b"b" * 100)) - 10
    assert [m.payload for m in dec.feed(stream[-10:])] == [b"b" * 100] and dec.buffered == 0


def _chunked(pieces, trailer=b""):
    out = b"".join(b"%x;ext=1\r\n" % len(p) + p + b"\r\n" for p in pieces)
    return out + b"0\r\n" + trailer + b"\r\n"


CHUNKED = {
    "good": _chunked([b"hello", b" ", random.Random(3).randbytes(70000), b"x" * 4096]) + b"EXTRA",
    "trailers": _chunked([b"abc"], b"T: 1\r\nU: 2\r\n"),
    "no_crlf": b"2\r\nabX\r\n",
    "bad_size": b"3\r\nabc\r\nzz\r\n",
    "negative": b"-1\r\n",
    "long_line": b"1" * 5000,
    "long_trailer": b"1\r\na\r\n0\r\n" + b"T: " + b"x" * 70000,
}


def _dechunk(cls, wire, cuts, kind):
    dec = cls()
    log = []
    pos = 0
    for cut in cuts + [len(wire)]:
        piece = wire[pos:cut]
        if kind == "bytearray":
            piece = bytearray(piece)
        elif kind == "memoryview":
            piece = memoryview(piece)
        try:
            got = [bytes(p) for p in dec.feed(piece)]
        except direct.BadResponse as e:
            log.append(("BadResponse", str(e)))
            break
        log.append((got, dec.done, dec.extra))
        pos = cut
    return log


@pytest.mark.parametrize("name", sorted(CHUNKED))
def test_the_chunked_decoder_matches_the_reference_at_every_cut(name):
    wire = CHUNKED[name]
    rng = random.Random(name)
    for cuts in _cut_sets(len(wire), rng):
        if len(cuts) == 1 and len(wire) > 3000 and cuts[0] % 101 and cuts[0] > 200 \
                and abs(cuts[0] - 70030) > 40 and len(wire) - cuts[0] > 4200:
            continue
        for kind in ("bytes", "bytearray", "memoryview"):
            assert _dechunk(direct.ChunkedDecoder, wire, cuts, kind) \
                == _dechunk(ref.ChunkedDecoder, wire, cuts, kind), (name, cuts, kind)


def test_a_read_inside_one_chunk_is_handed_on_without_a_copy():
    dec = direct.ChunkedDecoder()
    assert dec.feed(b"10\r\n") == []
    data = b"0123456789abcdef"
    out = dec.feed(data)
    assert out == [data] and out[0] is data
