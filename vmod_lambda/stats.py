"""The function's log tail (X-Amz-Log-Result) as varnishlog lines and as counters.

Lambda returns the last 4 KB of an invocation's log, base64-encoded, when asked with
X-Amz-Log-Type: Tail (log_tail = true). Its lines go to varnishlog next to the request; its REPORT
line gives the billed duration and, on a cold start, the Init Duration.
"""

import base64
import binascii
import re
from typing import List, Tuple

from .invoker import redact as redact_credentials

MAX_LINES = 64
MAX_LINE = 512

# Credentials a function might print (an event holds the client's Authorization header): never
# copied to varnishlog.
_SECRET_FIELD = re.compile(
    r"(?i)((?:proxy-)?authorization|x-amz-security-token|aws_secret_access_key|aws_session_token|"
    r"secretaccesskey|sessiontoken|cookie)([\"']?\s*[:=]\s*[\"']?)([^\"',}\]]+)")
_REPORT = re.compile(r"^REPORT RequestId:")
_BILLED = re.compile(r"Billed Duration: (\d+) ms")
_INIT = re.compile(r"Init Duration: ([0-9.]+) ms")


def decode_tail(log_result: str) -> str:
    """The text of an X-Amz-Log-Result value ("" when it is not base64)."""
    try:
        raw = base64.b64decode(log_result or "", validate=True)
    except (binascii.Error, ValueError):
        return ""
    return raw.decode("utf-8", "replace")


def redact(line: str) -> str:
    """Values of credential-carrying fields, then what invoker.redact() removes from failure
    reasons (SigV4 headers and signatures, tokens, access key ids, the credentials in use)."""
    line = _SECRET_FIELD.sub(lambda m: m.group(1) + m.group(2) + "[redacted]", line)
    return redact_credentials(line)


def tail_lines(log_result: str) -> List[str]:
    """The log tail as at most MAX_LINES printable one-line strings, credentials redacted."""
    out = []
    for line in decode_tail(log_result).splitlines():
        line = "".join(c if c.isprintable() else " " for c in line).strip()
        if not line:
            continue
        line = redact(line)
        if len(line) > MAX_LINE:
            line = line[:MAX_LINE - 3] + "..."
        out.append(line)
    if len(out) > MAX_LINES:
        out = [f"[{len(out) - MAX_LINES + 1} earlier lines not shown]"] + out[-(MAX_LINES - 1):]
    return out


def parse_tail(log_result: str) -> Tuple[int, bool]:
    """(billed milliseconds, cold start) from the REPORT line of a log tail; (0, False) without."""
    for line in reversed(decode_tail(log_result).splitlines()):
        if _REPORT.match(line):
            billed = _BILLED.search(line)
            return (int(billed.group(1)) if billed else 0), bool(_INIT.search(line))
    return 0, False
