"""The header policy of a backend fetch, both ways, as one table (vmod_lambda.vcc, "Header policy").

Request side: what of the backend request (bereq, after VCL) reaches the event. The request record
applies it once, where it is collected (_request.pyx, request_collect and the Request built in
Python), so the C event builder (_fastevent), the Python one (events.py) and probes see the same
headers. Response side: what of the function's answer reaches beresp (events._finish_headers for
"json" and "http" responses and the prelude of streamed ones).

Varnish itself already strips most hop-by-hop headers from a bereq it makes from a client request
(include/tbl/http_headers.h, flag F); this table is what the VMOD guarantees whatever VCL sets in
vcl_backend_fetch, and for pass and probe requests too. tests/varnish/test_header_policy.py runs every row
through varnishd; the manual's table is checked against ROWS.
"""

from dataclasses import dataclass

__all__ = ["Row", "ROWS", "REQUEST_DROP", "REQUEST_DROP_PREFIXES", "RESPONSE_DROP",
           "request_dropped", "response_dropped"]


@dataclass(frozen=True)
class Row:
    header: str         # a name, "Proxy-*" (a prefix), "(named in Connection)" or "(any)"
    request: str        # to the event: "sent" or "dropped"
    response: str       # from the function: "kept", "dropped", "recomputed" or "fails the fetch"
    why: str


# The hop-by-hop headers of RFC 9110 section 7.6.1 (and HTTP/1.0's Keep-Alive and
# Proxy-Connection, HTTP/2's upgrade header): they describe one connection, not the message.
_HOP = ("Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Transfer-Encoding",
        "Upgrade", "HTTP2-Settings")

ROWS = tuple(
    [Row(h, "dropped", "dropped", "hop-by-hop: describes one connection, not the message")
     for h in _HOP]
    + [Row("(named in Connection)", "dropped", "dropped",
           "hop-by-hop by declaration (RFC 9110 7.6.1)"),
       Row("Proxy-*", "dropped", "kept",
           "meant for a proxy on the way (Proxy-Authorization is a proxy's credential): never "
           "forwarded to the function; a response's Proxy-Authenticate is the function's to send"),
       Row("Content-Length", "sent", "recomputed",
           "the event carries the request's; beresp's is set from the body Varnish stores"),
       Row("(any; CR, LF, NUL in value)", "sent", "fails the fetch",
           "Varnish's own rule for backend headers (a BogoHeader); a request header of Varnish "
           "never has one"),
       Row("(any other)", "sent", "kept", "end-to-end; VCL decides (unset it in "
           "vcl_backend_fetch / vcl_backend_response)")])

REQUEST_DROP = frozenset(r.header.lower() for r in ROWS
                         if r.request == "dropped" and not r.header.startswith("(")
                         and not r.header.endswith("*"))
REQUEST_DROP_PREFIXES = tuple(r.header[:-1].lower() for r in ROWS
                              if r.request == "dropped" and r.header.endswith("*"))
RESPONSE_DROP = frozenset(r.header.lower() for r in ROWS
                          if r.response in ("dropped", "recomputed")
                          and not r.header.startswith("(") and not r.header.endswith("*"))


def _listed(headers) -> set:
    """The names the Connection headers of headers ((name, value) pairs) declare hop-by-hop."""
    out = set()
    for name, value in headers:
        if name.lower() == "connection":
            out.update(t.strip(" \t").lower() for t in value.split(","))
    out.discard("")
    return out


def request_dropped(headers) -> set:
    """The lower-cased names of headers that do not reach the event."""
    listed = _listed(headers)
    return {n for n in (name.lower() for name, _ in headers)
            if n in REQUEST_DROP or n in listed or n.startswith(REQUEST_DROP_PREFIXES)}


def response_dropped(headers) -> set:
    """The lower-cased names of the function's headers that do not reach beresp as sent
    (Content-Length is recomputed from the body)."""
    return RESPONSE_DROP | _listed(headers)


def manual_table() -> str:
    """The table of the manual (vmod_lambda.vcc), from ROWS."""
    def cell(h):
        return h if h.startswith("(") else f"``{h}``"
    w = (max(len(cell(r.header)) for r in ROWS), 8, 16)
    sep = f"{'=' * w[0]} {'=' * w[1]} {'=' * w[2]}"
    lines = [sep, f"{'header':<{w[0]}} {'to event':<{w[1]}} {'from function':<{w[2]}}".rstrip(),
             sep]
    lines += [f"{cell(r.header):<{w[0]}} {r.request:<{w[1]}} {r.response:<{w[2]}}".rstrip()
              for r in ROWS]
    lines.append(sep)
    lines.append("")
    lines += [f"* {(cell(r.header) + ' ... ' + cell(_HOP[-1])) if r.header == _HOP[0] else cell(r.header)}: "
              f"{r.why}." for r in ROWS if r.header not in _HOP[1:]]
    return "\n".join(lines)
