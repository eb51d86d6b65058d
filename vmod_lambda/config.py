"""Validation of lambda.backend() arguments.

Runs in the varnishd child at vcl.load (called by _vmod.pyx), and in pytest. Every error message names
the constructor, the object and the argument, so that a failed vcl.load says what to fix.
"""

import base64
import json
import re
from dataclasses import dataclass
from typing import Optional
from urllib.parse import urlsplit

from . import credentials as _credentials
from .credentials import CredentialSpec

DEFAULT_TIMEOUT = 62.0
MAX_TIMEOUT = 900.0          # Lambda's own maximum function timeout (15 minutes)
DEFAULT_POOL_SIZE = 64
MAX_POOL_SIZE = 1024
RESPONSE_FORMATS = ("json", "http")
EVENT_FORMATS = ("1.0-compat", "1.0", "2.0", "alb")
# The default: VCL written for movableink's vmod-lambda never names an event_format and gets its
# event, empty values included ("body":"", "queryStringParameters":{}).
DEFAULT_EVENT_FORMAT = "1.0-compat"
TRANSPORTS = ("boto3", "direct")
DEFAULT_TRANSPORT = "direct"
MAX_CLIENT_CONTEXT = 3583    # bytes of the base64-encoded X-Amz-Client-Context header
DEFAULT_THROTTLE_HOLD = 1.0

# FunctionName as the Invoke API accepts it: name, name:qualifier, partial or full ARN.
# https://docs.aws.amazon.com/lambda/latest/api/API_Invoke.html#API_Invoke_RequestSyntax
_FUNCTION_NAME = re.compile(
    r"^(?P<base>(arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:)?"
    r"(\d{12}:)?(function:)?([a-zA-Z0-9-_.]+))(:(?P<qualifier>\$LATEST|[a-zA-Z0-9-_]+))?$")
# Qualifier as the Invoke API accepts it: a version, $LATEST or an alias.
_QUALIFIER = re.compile(r"^(\$LATEST|[a-zA-Z0-9-_]{1,128})$")
_REGION = re.compile(r"^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$")


class ConfigError(ValueError):
    """A constructor argument is invalid; str() is the message for vcl.load."""


@dataclass(frozen=True)
class BackendConfig:
    name: str
    function_name: str
    region: str
    endpoint_url: Optional[str]
    timeout: float
    response_format: str
    pool_size: int
    event_format: str = DEFAULT_EVENT_FORMAT
    multi_value: bool = False
    transport: str = DEFAULT_TRANSPORT
    log_tail: bool = False
    streaming: bool = False
    # The function without a qualifier, and the qualifier (from the argument or function_name).
    base_name: str = ""
    qualifier: Optional[str] = None
    # X-Amz-Client-Context as sent: base64 of the JSON given.
    client_context: Optional[str] = None
    # Credentials per object (credentials.py): None for the default chain.
    credentials: Optional[CredentialSpec] = None
    # X-Amzn-Trace-Id from the request's own or its traceparent (trace.py).
    trace: bool = True
    # The bereq header whose value is the fetch's X-Amz-Tenant-Id (lower case), or None.
    tenant_header: Optional[str] = None
    # Seconds an object holds off after a 429 (0: never), and the longest wait for a slot of
    # pool_size (None: until the timeout). vmod_lambda.vcc, "Throttling".
    throttle_hold: float = DEFAULT_THROTTLE_HOLD
    max_queue_wait: Optional[float] = None

    @property
    def connect_timeout(self) -> float:
        return min(self.timeout, 10.0)


def validate_backend(name, function_name, region, endpoint_url=None, timeout=None,
                     response_format="json", pool_size=None, event_format=DEFAULT_EVENT_FORMAT,
                     multi_value=False, transport=None, log_tail=False, streaming=False,
                     qualifier=None, client_context=None,
                     role_arn=None, role_session_name=None, external_id=None,
                     sts_endpoint_url=None, profile=None, trace=True,
                     tenant_header=None, throttle_hold=DEFAULT_THROTTLE_HOLD,
                     max_queue_wait=None) -> BackendConfig:
    """Check the arguments of `new <name> = lambda.backend(...)`; raise ConfigError or return them."""
    def fail(what):
        raise ConfigError(f"lambda.backend(): {name}: {what}")

    function_name = function_name or ""
    region = region or ""
    if not function_name:
        fail("function_name must not be empty")
    m = _FUNCTION_NAME.match(function_name) if len(function_name) <= 170 else None
    if m is None:
        fail(f"function_name {function_name[:80]!r} is not a Lambda function name, "
             "name:qualifier or ARN")
    base_name, name_qualifier = m.group("base"), m.group("qualifier")
    if qualifier is not None:
        if not _QUALIFIER.match(qualifier):
            fail(f"qualifier {qualifier[:80]!r} is not a version, $LATEST or an alias name")
        if name_qualifier is not None and name_qualifier != qualifier:
            fail(f"qualifier {qualifier!r} disagrees with the qualifier {name_qualifier!r} in "
                 f"function_name {function_name[:80]!r}; give one of them")
    qualifier = qualifier if qualifier is not None else name_qualifier
    if not region:
        fail("region must not be empty")
    if not _REGION.match(region):
        fail(f"region {region[:80]!r} is not an AWS region name (like us-east-1)")
    def check_url(arg, url):
        parts = urlsplit(url) if re.match(r"^[\x21-\x7e]+$", url) else None
        try:
            port_ok = parts is not None and (parts.port is None or parts.port > 0)
        except ValueError:
            port_ok = False
        if (parts is None or parts.scheme not in ("http", "https") or not parts.hostname
                or not port_ok or parts.query or parts.fragment):
            fail(f"{arg} {url[:120]!r} is not an http:// or https:// URL")

    if endpoint_url is not None:
        check_url("endpoint_url", endpoint_url)
    if timeout is None:
        timeout = DEFAULT_TIMEOUT
    if not timeout > 0:
        fail(f"timeout must be greater than 0s (got {timeout:g}s)")
    if timeout > MAX_TIMEOUT:
        fail(f"timeout must be at most {MAX_TIMEOUT:g}s, Lambda's longest (got {timeout:g}s)")
    response_format = response_format or ""
    if response_format not in RESPONSE_FORMATS:
        fail(f"response_format must be \"json\" or \"http\" (got {response_format[:40]!r})")
    if pool_size is None:
        pool_size = DEFAULT_POOL_SIZE
    if not 1 <= pool_size <= MAX_POOL_SIZE:
        fail(f"pool_size must be from 1 to {MAX_POOL_SIZE} (got {pool_size})")
    event_format = event_format or ""
    if event_format not in EVENT_FORMATS:
        fail("event_format must be \"1.0-compat\", \"1.0\", \"2.0\" or \"alb\" "
             f"(got {event_format[:40]!r})")
    if multi_value and event_format != "alb":
        fail(f"multi_value applies to event_format = \"alb\" only (got {event_format!r}: "
             "1.0 events always carry both headers and multiValueHeaders, 2.0 events join "
             "repeated headers with commas)")
    transport = DEFAULT_TRANSPORT if transport is None else transport
    if transport not in TRANSPORTS:
        fail(f"transport must be one of {', '.join(repr(t) for t in TRANSPORTS)} "
             f"(got {transport[:40]!r})")
    client_context = encode_client_context(client_context, fail)
    # Credentials per object (credentials.py).
    creds = _credentials.validate(fail, region, role_arn, role_session_name, external_id,
                                  sts_endpoint_url, profile, check_url)
    if tenant_header is not None:
        from .headers import request_dropped
        if not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}", tenant_header):
            fail(f"tenant_header {tenant_header[:80]!r} is not a header name")
        if request_dropped([(tenant_header, "")]):
            fail(f"tenant_header {tenant_header!r} names a header that never reaches the "
                 "function (the header policy drops it)")
        tenant_header = tenant_header.lower()
    if throttle_hold is None:
        throttle_hold = DEFAULT_THROTTLE_HOLD
    if not 0 <= throttle_hold <= MAX_TIMEOUT:
        fail(f"throttle_hold must be from 0s (off) to {MAX_TIMEOUT:g}s (got {throttle_hold:g}s)")
    if max_queue_wait is not None and not 0 <= max_queue_wait <= MAX_TIMEOUT:
        fail(f"max_queue_wait must be from 0s to {MAX_TIMEOUT:g}s (got {max_queue_wait:g}s)")
    return BackendConfig(name, function_name, region, endpoint_url, float(timeout),
                         response_format, int(pool_size), event_format, bool(multi_value),
                         transport, bool(log_tail), bool(streaming), base_name, qualifier,
                         client_context, creds, bool(trace), tenant_header,
                         float(throttle_hold),
                         None if max_queue_wait is None else float(max_queue_wait))


def encode_client_context(text, fail):
    """The X-Amz-Client-Context header for the JSON object text (None stays None)."""
    if text is None:
        return None
    try:
        doc = json.loads(text)
    except ValueError as e:
        fail(f"client_context is not JSON: {e}")
    if not isinstance(doc, dict):
        fail("client_context must be a JSON object (like {\"custom\": {...}})")
    encoded = base64.b64encode(text.encode("utf-8")).decode("ascii")
    if len(encoded) > MAX_CLIENT_CONTEXT:
        fail(f"client_context is {len(encoded)} bytes base64-encoded, more than Lambda's "
             f"{MAX_CLIENT_CONTEXT}")
    return encoded
