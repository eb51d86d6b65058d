"""Invoking one Lambda function with boto3: the Python side of lambda.backend().invoke().

One Invoker per VCL object, created at vcl.load; its boto3 client is thread-safe and shared by the worker
threads. Errors come back as InvokeError with a `kind` (for counters and tests) and a one-line `reason`
for the log, which never contains credentials or request headers.
"""

import json
import threading
from dataclasses import dataclass
from typing import Optional

import boto3
from botocore.config import Config
from botocore.exceptions import (BotoCoreError, ClientError, ConnectionClosedError,
                                 ConnectTimeoutError, EndpointConnectionError, NoCredentialsError,
                                 ReadTimeoutError)

from .config import BackendConfig

__all__ = ["Invoker", "InvokeError", "InvokeResult", "MAX_PAYLOAD", "clean_reason"]

VERSION = "0.1.0"
MAX_PAYLOAD = 6 * 1024 * 1024      # synchronous invocation limit, request and response
MAX_ASYNC_PAYLOAD = 1024 * 1024    # asynchronous (Event) invocation limit
MAX_REASON = 400

# boto3 sessions are not thread-safe while they create clients; clients are once created.
_create_lock = threading.Lock()


class InvokeError(Exception):
    """An invocation failed. kind: function_error, timeout, throttled, service, transport, credentials,
    payload, internal."""

    def __init__(self, kind: str, reason: str, request_id: Optional[str] = None,
                 status: Optional[int] = None):
        super().__init__(reason)
        self.kind = kind
        self.reason = clean_reason(reason)
        self.request_id = request_id
        self.status = status

    def __str__(self):
        if self.request_id:
            return f"{self.reason} (RequestId: {self.request_id})"
        return self.reason


@dataclass
class InvokeResult:
    payload: bytes
    status: int
    request_id: Optional[str]
    executed_version: Optional[str]
    log_result: Optional[str]


def clean_reason(text) -> str:
    """One printable line of bounded length: log records must not be split or forged by content."""
    text = str(text)
    out = "".join(c if c.isprintable() else " " for c in text[:MAX_REASON * 2])
    out = " ".join(out.split())
    if len(out) > MAX_REASON:
        out = out[:MAX_REASON - 3] + "..."
    return out


def _function_error_reason(kind: str, payload: bytes) -> str:
    """`function error (Unhandled): ValueError: boom` from Lambda's {errorType, errorMessage}."""
    detail = ""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        doc = None
    if isinstance(doc, dict):
        etype, emsg = doc.get("errorType"), doc.get("errorMessage")
        detail = ": ".join(str(x) for x in (etype, emsg) if x)
    elif payload:
        detail = payload[:200].decode("utf-8", "replace")
    return f"function error ({kind})" + (f": {detail}" if detail else "")


class Invoker:
    def __init__(self, cfg: BackendConfig):
        self.cfg = cfg
        config = Config(
            region_name=cfg.region,
            connect_timeout=cfg.connect_timeout,
            read_timeout=cfg.timeout,
            # A read timeout must never invoke the function a second time.
            retries={"total_max_attempts": 1, "mode": "standard"},
            max_pool_connections=cfg.pool_size,
            tcp_keepalive=True,
            user_agent_extra=f"vmod-lambda/{VERSION}",
        )
        with _create_lock:
            session = boto3.session.Session()
            self.client = session.client("lambda", region_name=cfg.region,
                                         endpoint_url=cfg.endpoint_url, config=config)

    def invoke(self, payload: bytes, invocation_type: str = "RequestResponse",
               qualifier: Optional[str] = None) -> InvokeResult:
        """Invoke the function (RequestResponse, or Event: queued, answered with 202) with the
        object's qualifier, or with qualifier when given."""
        if invocation_type == "Event":
            if len(payload) > MAX_ASYNC_PAYLOAD:
                raise InvokeError("payload", f"payload of {len(payload)} bytes exceeds the 1 MB "
                                  "limit of asynchronous invocations; not sent")
        elif len(payload) > MAX_PAYLOAD:
            raise InvokeError("payload", f"payload of {len(payload)} bytes exceeds the 6 MB limit "
                              "of synchronous invocations; not sent")
        kwargs = {"FunctionName": self.cfg.base_name or self.cfg.function_name,
                  "InvocationType": invocation_type, "Payload": payload}
        qualifier = qualifier if qualifier is not None else self.cfg.qualifier
        if qualifier:
            kwargs["Qualifier"] = qualifier
        if self.cfg.client_context:
            kwargs["ClientContext"] = self.cfg.client_context
        if self.cfg.log_tail and invocation_type == "RequestResponse":
            kwargs["LogType"] = "Tail"
        try:
            try:
                resp = self._call(kwargs)
            except EndpointConnectionError:
                # Could not connect: nothing was sent, so one more try cannot invoke twice.
                resp = self._call(kwargs)
        except ClientError as e:
            err = e.response.get("Error", {})
            meta = e.response.get("ResponseMetadata", {})
            status = meta.get("HTTPStatusCode")
            code = err.get("Code") or "Error"
            kind = "throttled" if status == 429 or code == "TooManyRequestsException" else "service"
            msg = err.get("Message") or ""
            raise InvokeError(kind, f"{code} (HTTP {status})" + (f": {msg}" if msg else ""),
                              meta.get("RequestId") or None, status) from None
        except ReadTimeoutError:
            raise InvokeError("timeout", f"timed out after {self.cfg.timeout:g}s waiting for "
                              "the function") from None
        except ConnectTimeoutError:
            raise InvokeError("timeout", f"timed out after {self.cfg.connect_timeout:g}s "
                              "connecting to the endpoint") from None
        except EndpointConnectionError:
            raise InvokeError("transport", "cannot connect to the Lambda endpoint "
                              f"{self.client.meta.endpoint_url}") from None
        except ConnectionClosedError:
            raise InvokeError("transport", "the Lambda endpoint closed the connection before "
                              "it answered") from None
        except NoCredentialsError:
            raise InvokeError("credentials", "no AWS credentials found (environment, shared "
                              "files, container or instance role)") from None
        except BotoCoreError as e:
            raise InvokeError("transport", f"{type(e).__name__}: {e}") from None

        meta = resp.get("ResponseMetadata", {})
        request_id = meta.get("RequestId") or None
        body = resp["_body"]
        if resp.get("FunctionError"):
            raise InvokeError("function_error",
                              _function_error_reason(resp["FunctionError"], body), request_id,
                              resp.get("StatusCode"))
        return InvokeResult(body, resp.get("StatusCode", 200), request_id,
                            resp.get("ExecutedVersion"), resp.get("LogResult"))

    def _call(self, kwargs: dict) -> dict:
        resp = self.client.invoke(**kwargs)
        stream = resp.get("Payload")
        # Reading the body can time out or break as well: the same errors as the call.
        resp["_body"] = stream.read() if stream is not None else b""
        return resp
