"""The clients and transports of the child, shared by the objects that can share them (issue 21).

A boto3 session parses the Lambda service model (a gzip'ed JSON document) and resolves the credential
chain; a boto3 client and a direct transport (an SSL context, a pool of connections) cost more again.
Doing all that once per object made each lambda.backend() cost ~160 ms and ~10 MB at vcl.load. Here:

- one boto3 session per credential source, that is per set of AWS_* environment variables and state of
  the shared config and credentials files (in varnishd's child: one for its life, unless the files
  change; a new session then serves the objects of the next VCL, so rotated keys in the files are
  picked up by a vcl.load, as before). Its credential chain is resolved once, when it is created;
  refreshable credentials (instance and container roles, SSO, credential_process) then refresh
  themselves on the worker threads, never under vcl.load.
- one boto3 client per session, region, endpoint, timeouts and connection pool (ClientKey), and one
  direct transport (direct.DirectClient) per such client: every object with the same settings uses
  the same ones. What differs between those objects (function name, qualifier, limits, counters) is
  the object's own (invoker.Invoker, _vmod.pyx).

acquire() hands out a Shared (client, transport and what both need) and counts its users;
release() gives it back: the last user closes the transport's idle connections and the client, and
the entry is dropped. The direct transport keeps as many idle connections as its users' pool_size
added up, the most its users can have in flight.
"""

import os
import threading
import weakref
from dataclasses import dataclass
from typing import Optional

import boto3
import botocore
import botocore.parsers
from botocore.config import Config
from botocore.credentials import Credentials

from . import direct
from .config import MAX_POOL_SIZE

__all__ = ["ClientKey", "Shared", "acquire", "release", "stats", "clear"]

# Only the variables that change what a session resolves (credentials, config, endpoints, proxies,
# CA bundle): the rest of the environment does not start a new session.
_ENV_PREFIXES = ("AWS_", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy",
                 "no_proxy", "REQUESTS_CA_BUNDLE")
# boto3 sessions are not thread-safe while they create clients; clients are, once created.
_lock = threading.RLock()
_sessions = {}              # credential source -> _Session
_shared = {}                # ClientKey -> Shared


@dataclass(frozen=True)
class ClientKey:
    """What a shared client and transport are made from; objects with equal keys share them."""
    transport: str                      # "direct" or "boto3"
    region: str
    endpoint_url: Optional[str]
    connect_timeout: float
    read_timeout: float
    user_agent: str


class _Session:
    """A boto3 session and the credentials its chain found (None: none)."""

    def __init__(self, source):
        self.source = source
        self.session = boto3.session.Session()
        self.credentials = self.session.get_credentials()
        self.users = 0


class Shared:
    """A boto3 client and (direct transport) a DirectClient, with what the Invoker needs of them.

    transport: "direct" or "boto3" (an endpoint reached through a proxy keeps boto3's);
    anonymous: no credentials in the chain and an endpoint_url: requests signed with empty keys."""

    def __init__(self, key: ClientKey, sess: _Session):
        self.key = key
        self._session = sess
        self.users = 0
        self.limits = 0
        creds = sess.credentials
        keys = {}
        self.anonymous = creds is None and key.endpoint_url is not None
        if self.anonymous:
            creds = Credentials("", "")
            keys = {"aws_access_key_id": "", "aws_secret_access_key": ""}
        config = Config(
            region_name=key.region,
            connect_timeout=key.connect_timeout,
            read_timeout=key.read_timeout,
            # A read timeout must never invoke the function a second time.
            retries={"total_max_attempts": 1, "mode": "standard"},
            # urllib3 opens connections as calls need them and keeps this many idle: as many as
            # calls can be in flight at once (one per worker thread, see _handoff.pyx).
            max_pool_connections=MAX_POOL_SIZE,
            tcp_keepalive=True,
            user_agent_extra=key.user_agent,
        )
        self.client = sess.session.client("lambda", region_name=key.region,
                                          endpoint_url=key.endpoint_url, config=config, **keys)
        # The credentials both transports sign with (None: every call fails "no AWS credentials").
        self.credentials = creds
        meta = self.client.meta
        self.endpoint_url = meta.endpoint_url
        self.direct = None
        self.parser = self.invoke_shape = None
        self.transport = key.transport
        if key.transport == "direct":
            if _proxied(meta.endpoint_url):
                # boto3 sends through HTTP(S)_PROXY (unless NO_PROXY says otherwise); the direct
                # transport does not speak to proxies, so such objects keep boto3's transport.
                self.transport = "boto3"
            else:
                self._init_direct(sess.session)

    def _init_direct(self, session):
        """The direct transport, configured from the boto3 client and session."""
        meta = self.client.meta
        core = session._session         # botocore session: the config chain boto3 uses
        ca_bundle = core.get_config_variable("ca_bundle")
        if ca_bundle is None:
            from botocore.httpsession import get_cert_path
            ca_bundle = get_cert_path(True)
        self.direct = direct.DirectClient(
            meta.endpoint_url, meta.region_name, meta.service_model.signing_name,
            # The same provider chain the client uses; RefreshableCredentials refresh themselves.
            self.credentials, self.key.connect_timeout, self.key.read_timeout, 0,
            f"{self.key.user_agent} transport/direct botocore/{botocore.__version__}",
            ca_bundle=ca_bundle, verify=True)
        # Error answers are parsed by botocore's own parser, as the boto3 transport does.
        self.parser = botocore.parsers.create_parser(meta.service_model.metadata["protocol"])
        self.invoke_shape = meta.service_model.operation_model("Invoke").output_shape

    def add_limit(self, n: int):
        """Under _lock: a user with pool_size n came (n > 0) or went (n < 0). The direct transport
        keeps at most as many idle connections as its users can have invocations in flight."""
        self.limits += n
        if self.direct is not None:
            self.direct.pool_size = max(self.limits, 0)

    def close(self):
        if self.direct is not None:
            self.direct.close()
        try:
            self.client.close()
        except Exception:       # an old botocore without close(): its pool goes with it
            pass


def _proxied(url: str) -> bool:
    """Whether boto3 would reach url through a proxy from the environment."""
    from urllib.parse import urlsplit
    from botocore.utils import get_environ_proxies
    return bool(get_environ_proxies(url).get(urlsplit(url).scheme))


def _file_state(path: str):
    try:
        st = os.stat(os.path.expanduser(path))
        return (st.st_mtime_ns, st.st_size, st.st_ino)
    except OSError:
        return None


def _source() -> tuple:
    """What a session's credentials and configuration come from: the AWS_* (and proxy)
    environment and the state of the shared config and credentials files."""
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)))
    files = (os.environ.get("AWS_CONFIG_FILE", "~/.aws/config"),
             os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"))
    return env, tuple(_file_state(f) for f in files)


def acquire(key: ClientKey, limit: int) -> Shared:
    """The shared client and transport for key, counted as used by one more user whose
    invocations in flight are at most limit. Raises what creating them raises (the caller names
    the object)."""
    source = _source()
    with _lock:
        sess = _sessions.get(source)
        if sess is None:
            sess = _sessions[source] = _Session(source)
            if sess.credentials is not None:
                from .invoker import _credentials
                _credentials.add(sess.credentials)      # redacted from every log line
        skey = (key, source)
        shared = _shared.get(skey)
        if shared is None:
            shared = Shared(key, sess)
            _shared[skey] = shared
            sess.users += 1
            for op in ("Invoke", "InvokeWithResponseStream"):
                from .invoker import _content_type
                shared.client.meta.events.register(f"before-call.lambda.{op}", _content_type)
        shared.users += 1
        shared.add_limit(limit)
        return shared


def release(shared: Shared, limit: int):
    """A user of shared (acquired with limit) is gone. The last one closes it."""
    with _lock:
        shared.users -= 1
        shared.add_limit(-limit)
        if shared.users > 0:
            return
        skey = (shared.key, shared._session.source)
        if _shared.get(skey) is shared:
            del _shared[skey]
        sess = shared._session
        sess.users -= 1
        if sess.users <= 0 and _sessions.get(sess.source) is sess and sess.source != _source():
            # A session nobody uses and no new object would get (its files or environment
            # changed): dropped. The current one stays for the next VCL.
            del _sessions[sess.source]
    shared.close()


def track(owner, shared: Shared, limit: int):
    """Release shared when owner (an Invoker) is collected."""
    weakref.finalize(owner, release, shared, limit)


def stats() -> dict:
    """How many sessions and shared clients there are, and their users (for tests and status)."""
    with _lock:
        return {"sessions": len(_sessions), "clients": len(_shared),
                "users": sum(s.users for s in _shared.values())}


def clear():
    """Forget every session (tests that change the credential files in place)."""
    with _lock:
        _sessions.clear()
