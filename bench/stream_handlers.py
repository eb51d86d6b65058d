"""The functions of the streaming cases of bench/run.py, served by the product's emulator
(`python -m lambda_emulator`, started by bench/run.py with bench/ on its path).

trickle: writes its first chunk at once, then one more every 100 ms for ~1 s (11 chunks of 1 KiB).
With `?mode=http` (the streaming backend) it starts with an HTTP-integration prelude
(HttpResponseStream.from_), as a function behind a function URL does; otherwise (the buffered
backend, plain Invoke: the emulator collects what it writes into one payload) it writes, with the
same timing, a Lambda response JSON whose body is the same chunks.

big: `?mb=N` MiB of text in 64 KiB writes, as fast as the reader takes them (writes block while
nobody reads), after an HTTP-integration prelude.
"""

import time

from lambda_emulator import HttpResponseStream, streamify_response

CHUNKS = 11
INTERVAL = 0.1
LINE = (b"0123456789abcdef" * 64)[:1023] + b"\n"          # 1 KiB, JSON-safe text


@streamify_response
def trickle(event, response_stream, context):
    q = event.get("queryStringParameters") or {}
    http = q.get("mode") == "http"
    if http:
        out = HttpResponseStream.from_(response_stream, {
            "statusCode": 200, "headers": {"Content-Type": "text/plain", "Cache-Control": "no-store"}})
        out.write(LINE)
    else:
        out = response_stream
        out.write(b'{"statusCode":200,"headers":{"content-type":"text/plain",'
                  b'"cache-control":"no-store"},"body":"' + LINE[:-1] + b"\\n")
    for _ in range(CHUNKS - 1):
        time.sleep(INTERVAL)
        out.write(LINE if http else LINE[:-1] + b"\\n")
    if not http:
        out.write(b'"}')


@streamify_response
def big(event, response_stream, context):
    q = event.get("queryStringParameters") or {}
    out = HttpResponseStream.from_(response_stream, {
        "statusCode": 200, "headers": {"Content-Type": "text/plain", "Cache-Control": "no-store"}})
    block = (b"0123456789abcdef" * 4096)                     # 64 KiB
    for _ in range(int(q.get("mb", 100)) * 16):
        out.write(block)
