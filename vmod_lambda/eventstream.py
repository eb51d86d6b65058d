"""The response stream of InvokeWithResponseStream: AWS event stream framing and Lambda's HTTP prelude.

`POST /2021-11-15/functions/{name}/response-streaming-invocations` answers with a body in the
``application/vnd.amazon.eventstream`` framing. Each message is::

    total_length:u32  headers_length:u32  prelude_crc:u32      (the prelude: 12 bytes, big-endian)
    headers (headers_length bytes)  payload  message_crc:u32

prelude_crc is the CRC-32 of the first 8 bytes, message_crc the CRC-32 of everything before it. A
header is name_length:u8, name, type:u8, value (type 0/1: true/false, no value; 2: i8; 3: i16; 4: i32;
5: i64; 6: bytes and 7: string, both u16 length + data; 8: timestamp i64 ms; 9: uuid, 16 bytes).
Lambda sends ``:message-type event`` messages: ``:event-type PayloadChunk`` (the payload is a chunk of
the function's response) and one final ``InvokeComplete`` (a JSON payload {ErrorCode, ErrorDetails,
LogResult}); ``:message-type exception`` messages carry a service error.

A streamed HTTP response (Node's ``awslambda.HttpResponseStream.from``, function URLs) starts with a
JSON prelude ``{"statusCode": .., "headers": {..}, "cookies": [..]}`` and 8 NUL bytes, then the body.

This module is Python and standard library, with the CRC-32 of vmod_lambda._crc32 (C, the values
of binascii's, which it falls back to in a tree not built yet); it is compiled with the hot path
(setup.py, COMPILED_PY). The Decoder and the PreludeParser run in the VMOD's worker threads. It
only reads; the writer side (encode_message, payload_chunk, invoke_complete, encode_prelude) is the
emulator's, lambda_emulator/eventstream.py.
Memory stays bounded: a Decoder holds at most one message (max_payload + max_headers + what one
feed() brings), a PreludeParser at most max_prelude bytes.
"""

import json
import struct
try:
    from ._crc32 import crc32      # binascii.crc32, about five times faster
except ImportError:                 # the source tree before `make`: pure Python
    from binascii import crc32
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

__all__ = ["Decoder", "EventStreamError", "ChecksumError", "FrameError", "TruncatedError",
           "Message", "StreamEvent", "LambdaStream", "LambdaStreamError",
           "Prelude", "PreludeError", "PreludeParser", "PRELUDE_DELIMITER",
           "MAX_HEADERS", "MAX_PAYLOAD", "MAX_PRELUDE", "HTTP_INTEGRATION_CONTENT_TYPE"]

PRELUDE_LENGTH = 12
MIN_MESSAGE = PRELUDE_LENGTH + 4
# The limits botocore enforces (botocore/eventstream.py): Lambda stays far below them.
MAX_HEADERS = 128 * 1024
MAX_PAYLOAD = 24 * 1024 * 1024
MAX_PRELUDE = 64 * 1024          # an HTTP-integration prelude: beyond Varnish's own header limits
PRELUDE_DELIMITER = b"\0" * 8
HTTP_INTEGRATION_CONTENT_TYPE = "application/vnd.awslambda.http-integration-response"

_U32x3 = struct.Struct(">III")
_U32 = struct.Struct(">I")


class EventStreamError(Exception):
    """The response stream is not valid event stream framing; str() is a one-line reason."""


class ChecksumError(EventStreamError):
    """A prelude or message CRC-32 does not match: the bytes were damaged on the way."""


class FrameError(EventStreamError):
    """A message is malformed or beyond the limits (lengths, header types, sizes)."""


class TruncatedError(EventStreamError):
    """The stream ended inside a message."""


@dataclass
class Message:
    headers: dict
    payload: bytes


# --------------------------------------------------------------------------------------------------
# Decoding

def _parse_headers(buf, start: int, end: int) -> dict:
    headers = {}
    pos = start
    while pos < end:
        n = buf[pos]
        pos += 1
        if n == 0 or pos + n + 1 > end:
            raise FrameError("header name length out of bounds")
        try:
            name = bytes(buf[pos:pos + n]).decode("utf-8")
        except UnicodeDecodeError:
            raise FrameError("header name is not UTF-8") from None
        pos += n
        kind = buf[pos]
        pos += 1
        if kind in (0, 1):
            value = kind == 0
        elif kind in (2, 3, 4, 5, 8):
            size = {2: 1, 3: 2, 4: 4, 5: 8, 8: 8}[kind]
            if pos + size > end:
                raise FrameError(f"header {name[:40]!r}: value out of bounds")
            value = int.from_bytes(buf[pos:pos + size], "big", signed=True)
            pos += size
        elif kind in (6, 7):
            if pos + 2 > end:
                raise FrameError(f"header {name[:40]!r}: value length out of bounds")
            size = (buf[pos] << 8) | buf[pos + 1]
            pos += 2
            if pos + size > end:
                raise FrameError(f"header {name[:40]!r}: value out of bounds")
            value = bytes(buf[pos:pos + size])
            pos += size
            if kind == 7:
                try:
                    value = value.decode("utf-8")
                except UnicodeDecodeError:
                    raise FrameError(f"header {name[:40]!r}: string value is not UTF-8") from None
        elif kind == 9:
            if pos + 16 > end:
                raise FrameError(f"header {name[:40]!r}: value out of bounds")
            value = bytes(buf[pos:pos + 16])
            pos += 16
        else:
            raise FrameError(f"header {name[:40]!r}: unknown value type {kind}")
        if name in headers:
            raise FrameError(f"duplicate header {name[:40]!r}")
        headers[name] = value
    return headers


class Decoder:
    """Incremental event stream decoder: feed() bytes as they arrive, get whole, checked messages.

    Raises ChecksumError, FrameError (a length beyond max_headers / max_payload, a malformed header)
    and, from close(), TruncatedError. After an error the decoder is unusable (raises it again).
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD, max_headers: int = MAX_HEADERS):
        self.max_payload = max_payload
        self.max_headers = max_headers
        self._buf = bytearray()
        self._pos = 0
        self._need = 0           # total length of the message being assembled (0: prelude unread)
        self._error = None
        self.messages = 0
        self.bytes = 0
        # Lambda sends the same header block with every PayloadChunk: the last one parsed and its
        # dict, so that a repeat is a comparison of bytes (the same bytes parse the same way).
        self._last_raw = None
        self._last_headers = None

    def _fail(self, err):
        self._error = err
        self._buf = bytearray()
        self._pos = 0
        raise err

    def feed(self, data) -> List[Message]:
        if self._error is not None:
            raise self._error
        out = []
        buf = self._buf
        if not data:
            return self._messages(buf, out)
        self.bytes += len(data)
        if self._pos == len(buf):
            # Nothing buffered: read the messages straight from data (each payload is one copy
            # of it); only an unfinished message at its end is kept.
            self._pos = 0
            try:
                return self._messages(data, out)
            finally:
                if self._error is None and self._pos < len(data):
                    self._buf = bytearray(memoryview(data)[self._pos:])
                else:
                    self._buf = bytearray()
                self._pos = 0
        if self._pos > 65536 and self._pos * 2 > len(buf):
            del buf[:self._pos]
            self._pos = 0
        buf += data
        return self._messages(buf, out)

    def _messages(self, buf, out):
        while True:
            avail = len(buf) - self._pos
            if self._need == 0:
                if avail < PRELUDE_LENGTH:
                    break
                total, hlen, pcrc = _U32x3.unpack_from(buf, self._pos)
                actual = crc32(memoryview(buf)[self._pos:self._pos + 8])
                if actual != pcrc:
                    self._fail(ChecksumError(f"prelude CRC mismatch in message {self.messages + 1}"
                                             f" (expected 0x{pcrc:08x}, got 0x{actual:08x})"))
                if hlen > self.max_headers:
                    self._fail(FrameError(f"headers of {hlen} bytes exceed the limit of "
                                          f"{self.max_headers}"))
                if total < MIN_MESSAGE + hlen:
                    self._fail(FrameError(f"message length {total} is shorter than its headers "
                                          f"({hlen} bytes) and framing"))
                plen = total - MIN_MESSAGE - hlen
                if plen > self.max_payload:
                    self._fail(FrameError(f"payload of {plen} bytes exceeds the limit of "
                                          f"{self.max_payload}"))
                self._need = total
            if avail < self._need:
                break
            start, total = self._pos, self._need
            end = start + total
            view = memoryview(buf)
            (mcrc,) = _U32.unpack_from(buf, end - 4)
            actual = crc32(view[start:end - 4])
            if actual != mcrc:
                view.release()
                self._fail(ChecksumError(f"message CRC mismatch in message {self.messages + 1} "
                                         f"(expected 0x{mcrc:08x}, got 0x{actual:08x})"))
            (hlen,) = _U32.unpack_from(buf, start + 4)
            hstart = start + PRELUDE_LENGTH
            try:
                raw = bytes(buf[hstart:hstart + hlen])
                if raw == self._last_raw:
                    headers = dict(self._last_headers)
                else:
                    headers = _parse_headers(raw, 0, hlen)
                    self._last_raw, self._last_headers = raw, dict(headers)
            except FrameError as e:
                view.release()
                self._fail(e)
            payload = bytes(view[hstart + hlen:end - 4])
            view.release()
            out.append(Message(headers, payload))
            self.messages += 1
            self._pos = end
            self._need = 0
        if self._pos == len(buf) and self._pos and buf is self._buf:
            self._buf = bytearray()     # (data read in place: feed() keeps what is left)
            self._pos = 0
        return out

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def close(self):
        """The stream ended: raise TruncatedError if it ended inside a message."""
        if self._error is not None:
            raise self._error
        if self.buffered:
            self._fail(TruncatedError(f"the stream ended inside message {self.messages + 1} "
                                      f"({self.buffered} of "
                                      f"{self._need or 'at least ' + str(PRELUDE_LENGTH)} bytes)"))


# --------------------------------------------------------------------------------------------------
# Lambda's events on top of the framing

class LambdaStreamError(EventStreamError):
    """The stream is well framed but not a valid Lambda response stream."""


@dataclass
class StreamEvent:
    """One step of a Lambda response stream: a chunk of the payload, or the end."""
    kind: str                          # "chunk" | "complete"
    data: bytes = b""
    error_code: Optional[str] = None
    error_details: Optional[str] = None
    log_result: Optional[str] = None


class LambdaStream:
    """Decodes the events of an InvokeWithResponseStream body. feed() returns StreamEvents; after
    the InvokeComplete event nothing more may come. close() checks that the stream was complete."""

    def __init__(self, max_payload: int = MAX_PAYLOAD, max_headers: int = MAX_HEADERS):
        self.decoder = Decoder(max_payload, max_headers)
        self.complete = None

    def feed(self, data) -> List[StreamEvent]:
        out = []
        for msg in self.decoder.feed(data):
            if self.complete is not None:
                raise LambdaStreamError("a message came after InvokeComplete")
            mtype = msg.headers.get(":message-type")
            if mtype == "exception" or mtype == "error":
                code = msg.headers.get(":exception-type") or msg.headers.get(":error-code") \
                    or "error"
                detail = _error_text(msg.payload) or msg.headers.get(":error-message") or ""
                raise LambdaStreamError(f"the service sent {code} in the stream"
                                        + (f": {detail}" if detail else ""))
            if mtype != "event":
                raise LambdaStreamError(f"unexpected :message-type {str(mtype)[:40]!r}")
            etype = msg.headers.get(":event-type")
            if etype == "PayloadChunk":
                if msg.payload:
                    out.append(StreamEvent("chunk", msg.payload))
            elif etype == "InvokeComplete":
                try:
                    doc = json.loads(msg.payload or b"{}")
                except (ValueError, UnicodeDecodeError):
                    raise LambdaStreamError("InvokeComplete payload is not JSON") from None
                if not isinstance(doc, dict):
                    raise LambdaStreamError("InvokeComplete payload is not a JSON object")
                ev = StreamEvent("complete", error_code=_opt_str(doc.get("ErrorCode")),
                                 error_details=_opt_str(doc.get("ErrorDetails")),
                                 log_result=_opt_str(doc.get("LogResult")))
                self.complete = ev
                out.append(ev)
            # Other event types: new in the API, not ours to interpret (botocore skips them too).
        return out

    def close(self):
        self.decoder.close()
        if self.complete is None:
            raise TruncatedError("the stream ended without InvokeComplete")


def _opt_str(value) -> Optional[str]:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else json.dumps(value)


def _error_text(payload: bytes) -> str:
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return payload[:200].decode("utf-8", "replace")
    if isinstance(doc, dict):
        return str(doc.get("message") or doc.get("Message") or "")
    return ""


# --------------------------------------------------------------------------------------------------
# The HTTP-integration prelude

class PreludeError(ValueError):
    """A prelude was found but cannot become an HTTP response head; str() is a one-line reason."""


@dataclass
class Prelude:
    status: int
    headers: List[Tuple[str, str]] = field(default_factory=list)   # Set-Cookie from cookies included


def _parse_prelude(raw: bytes) -> Prelude:
    from .events import ResponseError, _json_headers, _json_status
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise PreludeError("the prelude before the 8 NUL bytes is not a JSON object") from None
    if type(doc) is not dict:
        raise PreludeError("the prelude before the 8 NUL bytes is not a JSON object")
    try:
        status = _json_status(doc["statusCode"]) if doc.get("statusCode") is not None else 200
        if status < 200:
            raise ResponseError(f"statusCode {status} is an interim (1xx) response, not a final "
                                "one")
        # The prelude has no multiValueHeaders; only headers and cookies are read.
        headers = _json_headers({"headers": doc.get("headers"), "cookies": doc.get("cookies")})
    except ResponseError as e:
        raise PreludeError(f"prelude: {e}") from None
    return Prelude(status, headers)


class PreludeParser:
    """Tells an HTTP-integration stream (prelude + 8 NUL + body) from a plain payload, incrementally.

    feed() returns None while undecided, then (prelude or None, body bytes so far) once; finish()
    decides at the end of the stream. The rule: a stream whose first byte is "{" and that has 8 NUL
    bytes within its first max_prelude bytes, before which stands a JSON object, is an
    HTTP-integration response; anything else (including a JSON payload, which never holds NULs) is
    a plain body. A prelude with a bad status or headers raises PreludeError.
    """

    def __init__(self, max_prelude: int = MAX_PRELUDE, expect: Optional[bool] = None):
        self.max_prelude = max_prelude
        self.expect = expect      # True: the content type said http-integration (must have one)
        self._buf = bytearray()
        self.decided = False

    def feed(self, data: bytes):
        if self.decided:
            raise RuntimeError("PreludeParser: already decided")
        if not data:
            return None
        if not self._buf and data[:1] != b"{" and not self.expect:
            return self._decide(None, bytes(data))
        start = max(0, len(self._buf) - 7)
        self._buf += data
        at = self._buf.find(PRELUDE_DELIMITER, start, self.max_prelude + 8)
        if at >= 0:
            raw = bytes(self._buf[:at])
            body = bytes(self._buf[at + 8:])
            try:
                prelude = _parse_prelude(raw)
            except PreludeError:
                if self.expect:
                    raise
                if raw[:1] == b"{":
                    try:
                        json.loads(raw)
                    except (ValueError, UnicodeDecodeError, RecursionError):
                        return self._decide(None, bytes(self._buf))
                raise
            return self._decide(prelude, body)
        if len(self._buf) >= self.max_prelude + 8:
            if self.expect:
                raise PreludeError(f"no prelude delimiter (8 NUL bytes) within the first "
                                   f"{self.max_prelude} bytes")
            return self._decide(None, bytes(self._buf))
        return None

    def finish(self):
        """The stream ended before a decision: what there is, is a plain body."""
        if self.decided:
            return None
        if self.expect and self._buf:
            raise PreludeError("the stream ended before the prelude delimiter (8 NUL bytes)")
        return self._decide(None, bytes(self._buf))

    def _decide(self, prelude, body):
        self.decided = True
        self._buf = bytearray()
        return prelude, body
