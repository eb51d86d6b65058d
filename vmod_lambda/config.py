"""Validation of lambda.backend() arguments.

Runs in the varnishd child at vcl.load (called by _vmod.pyx), and in pytest. Every error message names
the constructor, the object and the argument, so that a failed vcl.load says what to fix.
"""

import re
from dataclasses import dataclass
from typing import Optional
from urllib.parse import urlsplit

DEFAULT_TIMEOUT = 62.0
MAX_TIMEOUT = 900.0          # Lambda's own maximum function timeout (15 minutes)
DEFAULT_POOL_SIZE = 64
MAX_POOL_SIZE = 1024
RESPONSE_FORMATS = ("json", "http")
EVENT_FORMATS = ("1.0", "2.0", "alb")

# FunctionName as the Invoke API accepts it: name, name:qualifier, partial or full ARN.
# https://docs.aws.amazon.com/lambda/latest/api/API_Invoke.html#API_Invoke_RequestSyntax
_FUNCTION_NAME = re.compile(
    r"^(arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:)?(\d{12}:)?"
    r"(function:)?([a-zA-Z0-9-_.]+)(:(\$LATEST|[a-zA-Z0-9-_]+))?$")
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
    event_format: str = "1.0"
    multi_value: bool = False

    @property
    def connect_timeout(self) -> float:
        return min(self.timeout, 10.0)


def validate_backend(name, function_name, region, endpoint_url=None, timeout=None,
                     response_format="json", pool_size=None, event_format="1.0",
                     multi_value=False) -> BackendConfig:
    """Check the arguments of `new <name> = lambda.backend(...)`; raise ConfigError or return them."""
    def fail(what):
        raise ConfigError(f"lambda.backend(): {name}: {what}")

    function_name = function_name or ""
    region = region or ""
    if not function_name:
        fail("function_name must not be empty")
    if len(function_name) > 170 or not _FUNCTION_NAME.match(function_name):
        fail(f"function_name {function_name[:80]!r} is not a Lambda function name, "
             "name:qualifier or ARN")
    if not region:
        fail("region must not be empty")
    if not _REGION.match(region):
        fail(f"region {region[:80]!r} is not an AWS region name (like us-east-1)")
    if endpoint_url is not None:
        parts = urlsplit(endpoint_url) if re.match(r"^[\x21-\x7e]+$", endpoint_url) else None
        try:
            port_ok = parts is not None and (parts.port is None or parts.port > 0)
        except ValueError:
            port_ok = False
        if (parts is None or parts.scheme not in ("http", "https") or not parts.hostname
                or not port_ok or parts.query or parts.fragment):
            fail(f"endpoint_url {endpoint_url[:120]!r} is not an http:// or https:// URL")
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
        fail(f"event_format must be \"1.0\", \"2.0\" or \"alb\" (got {event_format[:40]!r})")
    return BackendConfig(name, function_name, region, endpoint_url, float(timeout),
                         response_format, int(pool_size), event_format, bool(multi_value))
