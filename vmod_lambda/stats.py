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

# Credentials a function might print (an event holds the client's Authorization header and cookies):
# never copied to varnishlog. A key of SECRET_KEYS, quoted or not, followed by ':' or '=' starts a
# value that is redacted whole, whatever the runtime wrote: JSON (one line or pretty-printed over
# several), Python's repr, Node's util.inspect, Java's Map.toString(), Go's %v of a map.
SECRET_KEYS = ("authorization", "proxy-authorization", "cookie", "cookies", "set-cookie",
               "x-amz-security-token", "x-api-key", "aws_secret_access_key", "aws_session_token",
               "secretaccesskey", "sessiontoken")
_SECRET_KEY = re.compile(
    r"(?i)(?<![\w-])([\"']?)(" + "|".join(re.escape(k) for k in SECRET_KEYS) +
    r")\1([ \t]*[:=][ \t]*)")
# A bare value (not quoted, no brackets) ends at a separator, at the end of the line, or where the
# next "key:" / "key=" of a Go map or a Java toString() starts (not after "; ": cookies go on).
_BARE_END = re.compile(r"[,}\])\n]|(?<!;)\s+[A-Za-z_][\w-]*[:=]")
_CLOSE = {"[": "]", "{": "}", "(": ")"}
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


def _value_end(text: str, i: int) -> int:
    """Where the value that starts at text[i] ends (exclusive): a quoted string to its closing quote,
    a bracketed one to its matching bracket (over lines, quotes respected), a bare one to _BARE_END.
    A value cut by the end of the tail runs to the end."""
    n = len(text)
    if i >= n:
        return n
    c = text[i]
    if c in "\"'":
        j = i + 1
        while j < n and text[j] != c and text[j] != "\n":
            j += 2 if text[j] == "\\" else 1
        return min(j + 1, n)
    if c in _CLOSE:
        stack, j = [_CLOSE[c]], i + 1
        while j < n and stack:
            ch = text[j]
            if ch in "\"'":
                j = _value_end(text, j)
                continue
            if ch in _CLOSE:
                stack.append(_CLOSE[ch])
            elif ch == stack[-1]:
                stack.pop()
            j += 1
        return j
    m = _BARE_END.search(text, i)
    return m.start() if m else n


def redact(text: str) -> str:
    """*text* (one line or a whole log tail) with the value of every SECRET_KEYS key replaced by
    "[redacted]" (a quoted one keeps its quotes), then without what invoker.redact() removes from
    failure reasons (SigV4 headers and signatures, tokens, access key ids, the credentials in use)."""
    out, pos = [], 0
    for m in _SECRET_KEY.finditer(text):
        if m.start() < pos:
            continue                # a key inside a value already redacted
        start = m.end()
        end = _value_end(text, start)
        out.append(text[pos:start])
        if end > start and text[start] in "\"'" and end - start >= 2 and text[end - 1] == text[start]:
            out.append(text[start] + "[redacted]" + text[start])
        elif end > start:
            out.append("[redacted]")
        pos = end
    out.append(text[pos:])
    return redact_credentials("".join(out))


def tail_lines(log_result: str) -> List[str]:
    """The log tail as at most MAX_LINES printable one-line strings, credentials redacted."""
    out = []
    # Redacted whole before it is split: a value may span lines (pretty-printed JSON, util.inspect).
    for line in redact(decode_tail(log_result)).splitlines():
        line = "".join(c if c.isprintable() else " " for c in line).strip()
        if not line:
            continue
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
