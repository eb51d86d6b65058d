"""The writer side of InvokeWithResponseStream: AWS event stream framing, Lambda's PayloadChunk and
InvokeComplete events, the HTTP-integration prelude, and the sender of one streamed answer.

Each message is::

    total_length:u32  headers_length:u32  prelude_crc:u32      (the prelude: 12 bytes, big-endian)
    headers (headers_length bytes)  payload  message_crc:u32

prelude_crc is the CRC-32 of the first 8 bytes, message_crc the CRC-32 of everything before it. A
header is name_length:u8, name, type:u8, value (this writer uses 0/1: true/false, no value; 4: i32;
6: bytes and 7: string, both u16 length + data). The reader side (the Decoder, LambdaStream and
PreludeParser that run in the VMOD) is vmod_lambda/eventstream.py; tests/unit/test_eventstream.py checks
the two against each other and against botocore's parser.
"""

import json
import socket
import struct
import time
from binascii import crc32
from typing import Optional

from .faults import FaultPlan

__all__ = ["encode_message", "payload_chunk", "invoke_complete", "exception_message",
           "encode_prelude", "StreamSender", "StreamAborted", "PRELUDE_DELIMITER",
           "EVENTSTREAM_CONTENT_TYPE", "HTTP_INTEGRATION_CONTENT_TYPE"]

PRELUDE_LENGTH = 12
MIN_MESSAGE = PRELUDE_LENGTH + 4
PRELUDE_DELIMITER = b"\0" * 8
EVENTSTREAM_CONTENT_TYPE = "application/vnd.amazon.eventstream"
HTTP_INTEGRATION_CONTENT_TYPE = "application/vnd.awslambda.http-integration-response"

_U32 = struct.Struct(">I")


def _encode_header(name: str, value) -> bytes:
    raw = name.encode("utf-8")
    if not 0 < len(raw) < 256:
        raise ValueError(f"header name {name[:40]!r} must be 1 to 255 bytes")
    out = bytes([len(raw)]) + raw
    if value is True:
        return out + b"\x00"
    if value is False:
        return out + b"\x01"
    if isinstance(value, int):
        return out + b"\x04" + struct.pack(">i", value)
    if isinstance(value, str):
        value = value.encode("utf-8")
        kind = b"\x07"
    elif isinstance(value, (bytes, bytearray)):
        kind = b"\x06"
    else:
        raise TypeError(f"header {name}: cannot encode a {type(value).__name__}")
    if len(value) > 0xFFFF:
        raise ValueError(f"header {name}: value longer than 65535 bytes")
    return out + kind + struct.pack(">H", len(value)) + bytes(value)


def encode_message(headers, payload: bytes = b"", *, corrupt: Optional[str] = None) -> bytes:
    """One event stream message. headers: a dict or (name, value) pairs (str, bytes, bool, int).
    corrupt="prelude" or "message" flips a bit of that CRC (for tests of the decoders)."""
    items = headers.items() if isinstance(headers, dict) else headers
    hdr = b"".join(_encode_header(n, v) for n, v in items)
    total = MIN_MESSAGE + len(hdr) + len(payload)
    head = struct.pack(">II", total, len(hdr))
    pcrc = crc32(head)
    if corrupt == "prelude":
        pcrc ^= 1
    msg = head + _U32.pack(pcrc) + hdr + payload
    mcrc = crc32(msg)
    if corrupt == "message":
        mcrc ^= 1
    return msg + _U32.pack(mcrc)


def payload_chunk(data: bytes, **kw) -> bytes:
    """A Lambda PayloadChunk event."""
    return encode_message([(":event-type", "PayloadChunk"), (":content-type",
                           "application/octet-stream"), (":message-type", "event")], data, **kw)


def invoke_complete(error_code: Optional[str] = None, error_details: Optional[str] = None,
                    log_result: Optional[str] = None, **kw) -> bytes:
    """Lambda's final InvokeComplete event (members that are None are left out, as Lambda does)."""
    body = {k: v for k, v in (("ErrorCode", error_code), ("ErrorDetails", error_details),
                              ("LogResult", log_result)) if v is not None}
    return encode_message([(":event-type", "InvokeComplete"), (":content-type", "application/json"),
                           (":message-type", "event")], json.dumps(body).encode(), **kw)


def exception_message(exception_type: str, message: str, **kw) -> bytes:
    """A modeled-exception message, as AWS sends a service error inside an event stream."""
    return encode_message([(":exception-type", exception_type), (":content-type",
                           "application/json"), (":message-type", "exception")],
                          json.dumps({"message": message}).encode(), **kw)


def encode_prelude(status: int = 200, headers: Optional[dict] = None,
                   cookies: Optional[list] = None) -> bytes:
    """What awslambda.HttpResponseStream.from() writes first: JSON, then 8 NUL bytes."""
    doc = {"statusCode": status}
    if headers is not None:
        doc["headers"] = headers
    if cookies is not None:
        doc["cookies"] = cookies
    return json.dumps(doc, separators=(",", ":")).encode() + PRELUDE_DELIMITER


class StreamAborted(Exception):
    """The streamed response ended early: the client went away, or a "close" fault."""


class StreamSender:
    """Writes the event stream of one InvokeWithResponseStream answer in HTTP chunked framing to
    wfile, as the worker's ("chunk", bytes) and ("fault", kind, options) messages come (on_message),
    and applies the faults the handler asked for (faults.FaultPlan)."""

    def __init__(self, wfile, connection):
        self.wfile = wfile
        self.connection = connection
        self.faults = FaultPlan()

    def take_corruption(self):
        return self.faults.take_corruption()

    def on_message(self, msg):
        if msg[0] == "fault":
            if self.faults.ask(msg[1], msg[2]):
                try:
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                raise StreamAborted("closed by a fault")
            return
        self.send_frame(payload_chunk(msg[1], corrupt=self.take_corruption()))

    def send_frame(self, frame):
        stall = self.faults.take_stall()
        if stall:
            time.sleep(stall)
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
            self.wfile.flush()
        except OSError as e:
            raise StreamAborted(f"the client went away: {e}") from None
