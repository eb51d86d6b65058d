"""The boto3 sessions and clients of the child, shared by the objects that can share them (issue 21).

A boto3 session parses the Lambda service model (a gzip'ed JSON document) and resolves the credential
chain; a boto3 client and a transport (an SSL context, a pool of connections) cost more again. Doing
all that once per object made each lambda.backend() cost ~160 ms and ~10 MB at vcl.load. Here:

- one boto3 session per credential source, that is per set of AWS_* (and proxy) environment
  variables and state of the shared config and credentials files, and per credentials.CredentialSpec
  (an object's profile and assumed role: objects with the same spec share one refreshable
  credential set, and one STS AssumeRole per refresh): in varnishd's child, one for its
  life, unless the files change; a new session then serves the objects of the next VCL, so keys
  rotated in the files are picked up by a vcl.load, as before. Its credential chain is resolved once,
  when it is created; refreshable credentials (instance and container roles, SSO,
  credential_process) then refresh themselves where they are used (worker threads), never under
  vcl.load.
- one boto3 client per session and ClientKey (region, endpoint, timeouts, ...): every object with the
  same settings uses the same one (a Shared), and whatever else its users build from it once and
  share (Shared.extra(): a transport). What differs between those objects (function name,
  qualifier, limits, counters) is the object's own (invoker.Invoker, _vmod.pyx).

acquire() hands out a Shared and counts its users and their limits (pool_size); release() gives it
back, and the last user closes its extras and its client. This module knows nothing of transports.
"""

import os
import threading
import weakref
from dataclasses import dataclass
from typing import Callable, Optional

import boto3
from botocore.config import Config
from botocore.credentials import Credentials

from . import credentials as _credentials

__all__ = ["ClientKey", "Shared", "acquire", "release", "track", "stats", "MAX_POOL_CONNECTIONS"]

# urllib3 opens connections as calls need them and keeps this many idle: as many as calls can be in
# flight at once (one per worker thread of the pool, at most 1024: _handoff.pyx, config.py).
MAX_POOL_CONNECTIONS = 1024
# Only the variables that change what a session resolves (credentials, config, endpoints, proxies,
# CA bundle): the rest of the environment does not start a new session.
_ENV_PREFIXES = ("AWS_", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy",
                 "no_proxy", "REQUESTS_CA_BUNDLE")
# boto3 sessions are not thread-safe while they create clients; clients are, once created.
_lock = threading.RLock()
_sessions = {}              # (credential source, CredentialSpec) -> _Session
_shared = {}                # (ClientKey, (credential source, CredentialSpec)) -> Shared
# Called with no argument after the set of credential sets in use changed (lambda.status()).
listeners = []


@dataclass(frozen=True)
class ClientKey:
    """What a shared client is made from; objects with equal keys share it (and its extras)."""
    region: str
    endpoint_url: Optional[str]
    connect_timeout: float
    read_timeout: float
    user_agent: str
    # Anything else the extras depend on (the caller's; e.g. the hooks a transport is given).
    variant: tuple = ()


class _Session:
    """A boto3 session and the credentials its chain found (None: none); with a spec, the chain
    of its profile, and for a role_arn the role's credentials (credentials.py), assumed with
    them."""

    def __init__(self, source, spec=None):
        self.source = source
        self.spec = spec
        self.id = (source, spec)
        profile = spec.profile if spec is not None else None
        self.session = boto3.session.Session(profile_name=profile)
        if spec is not None and spec.role_arn is not None:
            # STS is called with this session's chain; the clients sign with the role's.
            self.credentials = _credentials.assumed_role_credentials(spec, self.session)
            self.session = _credentials.session_signing_with(self.credentials, profile)
        else:
            self.credentials = self.session.get_credentials()
        self.users = 0


class Shared:
    """A boto3 client shared by the users of one ClientKey, with the session it came from.

    credentials: what requests are signed with (None: every call fails "no AWS credentials");
    anonymous: the chain found nothing and the key has an endpoint_url, so credentials are empty
    keys (as movableink's vmod-lambda signs); limits: the users' pool_size added up."""

    def __init__(self, key: ClientKey, sess: _Session):
        self.key = key
        self._session = sess
        self.session = sess.session
        self.users = 0
        self.limits = 0
        self._extras = {}       # name -> [object, resize or None]
        creds = sess.credentials
        keys = {}
        self.anonymous = creds is None and key.endpoint_url is not None
        if self.anonymous:
            creds = Credentials("", "")
            keys = {"aws_access_key_id": "", "aws_secret_access_key": ""}
        self.credentials = creds
        config = Config(
            region_name=key.region,
            connect_timeout=key.connect_timeout,
            read_timeout=key.read_timeout,
            # A read timeout must never invoke the function a second time.
            retries={"total_max_attempts": 1, "mode": "standard"},
            max_pool_connections=MAX_POOL_CONNECTIONS,
            tcp_keepalive=True,
            user_agent_extra=key.user_agent,
        )
        self.client = sess.session.client("lambda", region_name=key.region,
                                          endpoint_url=key.endpoint_url, config=config, **keys)

    def extra(self, name: str, factory: Callable[[], object],
              resize: Optional[Callable[[object, int], None]] = None):
        """The object its users share under name (a transport), made by factory() for the first
        one. resize(obj, limits) is called now and whenever the users' limits change."""
        with _lock:
            entry = self._extras.get(name)
            if entry is None:
                entry = self._extras[name] = [factory(), resize]
                if resize is not None:
                    resize(entry[0], self.limits)
            return entry[0]

    def _set_limits(self, n: int):
        self.limits = n
        for obj, resize in self._extras.values():
            if resize is not None:
                resize(obj, n)

    def close(self):
        for obj, _ in self._extras.values():
            close = getattr(obj, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:   # closing idle connections: nothing to report to
                    pass
        try:
            self.client.close()
        except Exception:           # an old botocore without close(): its pool goes with it
            pass


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


def acquire(key: ClientKey, limit: int, setup: Optional[Callable[[Shared], None]] = None,
            spec=None) -> Shared:
    """The shared client for key, counted as used by one more user whose invocations in flight
    are at most limit; spec: the user's credentials.CredentialSpec (None: the default chain).
    setup(shared) runs once, when the client is created (event handlers, registering the
    credentials for redaction). Raises what creating it raises (the caller names the object)."""
    sid = (_source(), spec)
    with _lock:
        sess = _sessions.get(sid)
        if sess is None:
            sess = _sessions[sid] = _Session(*sid)
        skey = (key, sid)
        shared = _shared.get(skey)
        created = shared is None
        if created:
            shared = Shared(key, sess)
            if setup is not None:
                setup(shared)
            _shared[skey] = shared
            sess.users += 1
        shared.users += 1
        shared._set_limits(shared.limits + limit)
    if created:
        _notify()
    return shared


def release(shared: Shared, limit: int):
    """A user of shared (acquired with limit) is gone; the last one closes it."""
    with _lock:
        shared.users -= 1
        shared._set_limits(shared.limits - limit)
        if shared.users > 0:
            return
        skey = (shared.key, shared._session.id)
        if _shared.get(skey) is shared:
            del _shared[skey]
        sess = shared._session
        sess.users -= 1
        if (sess.users <= 0 and _sessions.get(sess.id) is sess
                and (sess.source != _source() or sess.spec is not None)):
            # A session nobody uses and no new object would get (its files or environment
            # changed), or one of a profile or role that no object uses any more: dropped. The
            # current chain's stays for the next VCL (a reload loads the new VCL before it
            # discards the old one, so a spec in both keeps its session and credentials).
            del _sessions[sess.id]
    shared.close()
    _notify()


def _notify():
    for fn in list(listeners):
        try:
            fn()
        except Exception:           # a listener's own failure: nothing to report to here
            pass


def in_use() -> str:
    """The credential sets the live clients sign with, for lambda.status(): "chain" (the
    default chain) and each spec (credentials.describe(): never a secret), comma-separated."""
    with _lock:
        specs = {s._session.spec for s in _shared.values() if s.users > 0}
    names = sorted(_credentials.describe(sp) for sp in specs)
    return ",".join(names) or "none"


def track(owner, shared: Shared, limit: int):
    """Release shared (acquired with limit) when owner (an Invoker) is collected."""
    weakref.finalize(owner, release, shared, limit)


def stats() -> dict:
    """How many sessions and shared clients there are, and their users."""
    with _lock:
        return {"sessions": len(_sessions), "clients": len(_shared),
                "users": sum(s.users for s in _shared.values())}
