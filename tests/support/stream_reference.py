"""The event stream Decoder and the ChunkedDecoder as they were before the streamed path was made
faster (issue 17): the reference the current ones must match piece for piece and error for error
(tests/unit/test_stream_decoders_reference.py). Frozen copies, not to be changed: only their
exception classes come from the product, so that the errors compare by type and text."""

import struct
from typing import List
from binascii import crc32

from vmod_lambda.eventstream import ChecksumError, FrameError, Message, TruncatedError
from vmod_lambda.transport.direct import BadResponse

PRELUDE_LENGTH = 12
MIN_MESSAGE = PRELUDE_LENGTH + 4
# The limits botocore enforces (botocore/eventstream.py): Lambda stays far below them.
MAX_HEADERS = 128 * 1024
MAX_PAYLOAD = 24 * 1024 * 1024

_U32x3 = struct.Struct(">III")
_U32 = struct.Struct(">I")



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

    def _fail(self, err):
        self._error = err
        self._buf = bytearray()
        self._pos = 0
        raise err

    def feed(self, data) -> List[Message]:
        if self._error is not None:
            raise self._error
        out = []
        if data:
            self.bytes += len(data)
            if self._pos and self._pos == len(self._buf):
                self._buf = bytearray(data)
                self._pos = 0
            else:
                if self._pos > 65536 and self._pos * 2 > len(self._buf):
                    del self._buf[:self._pos]
                    self._pos = 0
                self._buf += data
        buf = self._buf
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
                headers = _parse_headers(buf, hstart, hstart + hlen)
            except FrameError as e:
                view.release()
                self._fail(e)
            payload = bytes(view[hstart + hlen:end - 4])
            view.release()
            out.append(Message(headers, payload))
            self.messages += 1
            self._pos = end
            self._need = 0
        if self._pos == len(buf) and self._pos:
            self._buf = bytearray()
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



_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class ChunkedDecoder:
    """An incremental decoder of a chunked body (RFC 9112, 7.1): feed() takes the bytes as they
    are read and returns the body's bytes decoded so far; done once the last chunk and the trailers
    (ignored) are in; extra counts the bytes that came after them. Raises BadResponse."""

    __slots__ = ("_buf", "_state", "_left", "done", "extra")

    def __init__(self):
        self._buf = bytearray()
        self._state = _SIZE
        self._left = 0
        self.done = False
        self.extra = 0

    def feed(self, data) -> list:
        out = []
        if self.done:
            self.extra += len(data)
            return out
        buf = self._buf
        buf += data
        pos = 0
        n = len(buf)
        while True:
            state = self._state
            if state == _DATA:
                k = min(self._left, n - pos)
                if k:
                    out.append(bytes(buf[pos:pos + k]))
                    pos += k
                    self._left -= k
                if self._left:
                    break
                self._state = _DATA_END
            elif state == _DATA_END:
                if n - pos < 2:
                    break
                if buf[pos:pos + 2] != b"\r\n":
                    raise BadResponse("chunk not terminated by CRLF")
                pos += 2
                self._state = _SIZE
            else:
                i = buf.find(b"\r\n", pos)
                if i < 0:
                    if state == _SIZE and n - pos > 4096:
                        raise BadResponse("chunk size line too long")
                    if state == _TRAILER and n - pos > 65536:
                        raise BadResponse("trailer section too large")
                    break
                line = bytes(buf[pos:i])
                pos = i + 2
                if state == _TRAILER:
                    if not line:            # the empty line after the trailers (ignored)
                        self._state = _DONE
                        self.done = True
                        self.extra = n - pos
                        pos = n
                        break
                    continue
                size_text = line.split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                    if size < 0:
                        raise ValueError
                except ValueError:
                    raise BadResponse(f"invalid chunk size {size_text[:20]!r}") from None
                if size == 0:
                    self._state = _TRAILER
                else:
                    self._left = size
                    self._state = _DATA
        del buf[:pos]
        return out
