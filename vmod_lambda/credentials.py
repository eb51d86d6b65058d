"""Credentials per object (issue 18): a named profile of the shared config, an assumed role.

lambda.backend(..., profile = "p", role_arn = "arn:aws:iam::123456789012:role/r",
role_session_name, external_id, sts_endpoint_url) give a CredentialSpec (validated at vcl.load by
validate(), called from config.validate_backend()). clients.py keeps one boto3 session per
credential source *and* spec, so every object with the same spec shares one credential set:

- no spec: the default credential chain (environment, shared files, web identity, container,
  instance role), as before;
- profile: the chain of that profile (boto3.Session(profile_name=...)), whatever it holds (keys, a
  role of its own with source_profile, SSO, credential_process);
- role_arn: AssumedRoleCredentials, botocore refreshable credentials whose refresh is one STS
  AssumeRole call signed with the chain's (or the profile's) credentials. They are fetched on first
  use (never at vcl.load), then refreshed before they expire (a quarter of their lifetime before,
  at most 15 minutes: botocore's advisory window, scaled for short sessions), never per invocation.

A refresh that fails raises StsError (its reason names the role and STS's error code and message,
never credentials); both transports turn it into InvokeError("sts"), counted in sts_fail. After a
failure, calls within STS_RETRY_HOLD seconds fail with the same error without asking STS again, so
an STS outage costs one STS call per second and object set, not one per invocation.
"""

import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Optional

__all__ = ["CredentialSpec", "StsError", "AssumedRoleCredentials", "validate", "describe",
           "DEFAULT_SESSION_NAME", "STS_RETRY_HOLD"]

DEFAULT_SESSION_NAME = "vmod-lambda"
# After a failed AssumeRole, how long calls fail at once with its error before STS is asked again.
STS_RETRY_HOLD = 1.0
# STS calls: short timeouts (a worker waits for it), one retry of what botocore finds retryable.
STS_CONNECT_TIMEOUT = 5.0
STS_READ_TIMEOUT = 10.0

# https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html
# RoleArn: an IAM role ARN (a path is allowed: role/path/name), 20-2048 characters.
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$", re.ASCII)
# RoleSessionName: 2-64 of [\w+=,.@-].
_SESSION_NAME = re.compile(r"^[\w+=,.@-]{2,64}$", re.ASCII)
# ExternalId: 2-1224 of [\w+=,.@:/-].
_EXTERNAL_ID = re.compile(r"^[\w+=,.@:/-]{2,1224}$", re.ASCII)
_PROFILE = re.compile(r"^[\x21-\x7e]{1,128}$")


class StsError(Exception):
    """STS could not give the role's credentials. str(): the reason for the log (no secrets)."""


@dataclass(frozen=True)
class CredentialSpec:
    """Where an object's credentials come from, beyond the default chain (see the module doc).
    sts_region: the object's region, for the regional STS endpoint of an assumed role."""
    profile: Optional[str] = None
    role_arn: Optional[str] = None
    session_name: str = DEFAULT_SESSION_NAME
    external_id: Optional[str] = None
    sts_endpoint_url: Optional[str] = None
    sts_region: Optional[str] = None


def describe(spec: Optional[CredentialSpec]) -> str:
    """The spec for lambda.status() and logs: no secret (the external id shows as "set")."""
    if spec is None:
        return "chain"
    parts = []
    if spec.role_arn is not None:
        parts.append(f"role={spec.role_arn}")
        parts.append(f"session={spec.session_name}")
        if spec.external_id is not None:
            parts.append("external_id=set")
        if spec.sts_endpoint_url is not None:
            parts.append(f"sts={spec.sts_endpoint_url}")
    if spec.profile is not None:
        parts.append(f"profile={spec.profile}")
    return "(" + ",".join(parts) + ")"


def available_profiles():
    """The profiles of the shared config and credentials files (AWS_CONFIG_FILE,
    AWS_SHARED_CREDENTIALS_FILE) as the child sees them."""
    import botocore.session
    return botocore.session.Session().available_profiles


def validate(fail, region, role_arn=None, role_session_name=None, external_id=None,
             sts_endpoint_url=None, profile=None, check_url=None) -> Optional[CredentialSpec]:
    """The CredentialSpec of lambda.backend()'s credential arguments (None: the default chain).
    fail(what) raises the ConfigError naming the object; check_url(name, url) checks a URL."""
    if role_arn is None:
        for arg, value in (("role_session_name", role_session_name),
                           ("external_id", external_id),
                           ("sts_endpoint_url", sts_endpoint_url)):
            if value is not None:
                fail(f"{arg} needs role_arn (it applies to the role the object assumes)")
    else:
        if not (20 <= len(role_arn) <= 2048 and _ROLE_ARN.match(role_arn)):
            fail(f"role_arn {role_arn[:120]!r} is not an IAM role ARN "
                 "(arn:aws:iam::<12-digit account>:role/<name>)")
        if role_session_name is None:
            role_session_name = DEFAULT_SESSION_NAME
        if not _SESSION_NAME.match(role_session_name):
            fail(f"role_session_name {role_session_name[:80]!r} must be 2 to 64 characters "
                 "of letters, digits and +=,.@_-")
        if external_id is not None and not _EXTERNAL_ID.match(external_id):
            # The value itself is not logged: it may be treated as a shared secret.
            fail(f"external_id must be 2 to 1224 characters of letters, digits and +=,.@:/_- "
                 f"(got {len(external_id)} characters)")
        if sts_endpoint_url is not None:
            check_url("sts_endpoint_url", sts_endpoint_url)
    if profile is not None:
        if not _PROFILE.match(profile):
            fail(f"profile {profile[:80]!r} is not a profile name")
        try:
            profiles = available_profiles()
        except Exception as e:      # a shared config file botocore cannot parse
            fail(f"profile {profile!r}: cannot read the shared config files: "
                 f"{type(e).__name__}: {e}")
        if profile not in profiles:
            fail(f"profile {profile!r} is not in the shared config or credentials file "
                 f"(profiles there: {', '.join(sorted(profiles)[:20]) or 'none'})")
    if role_arn is None and profile is None:
        return None
    return CredentialSpec(profile, role_arn, role_session_name or DEFAULT_SESSION_NAME,
                          external_id, sts_endpoint_url, region if role_arn is not None else None)


def _sts_reason(spec: CredentialSpec, e: Exception) -> str:
    from botocore.exceptions import ClientError, NoCredentialsError
    what = f"STS AssumeRole of {spec.role_arn} failed"
    if isinstance(e, ClientError):
        err = e.response.get("Error", {})
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return (f"{what}: {err.get('Code') or 'error'} (HTTP {status}): "
                f"{err.get('Message') or ''}").rstrip(": ")
    if isinstance(e, NoCredentialsError):
        return (f"{what}: no AWS credentials to call STS with (environment, shared files, "
                "container or instance role)")
    return f"{what}: {type(e).__name__}: {e}"


def _make_refreshable():
    from botocore.credentials import DeferredRefreshableCredentials, ReadOnlyCredentials

    class AssumedRoleCredentials(DeferredRefreshableCredentials):
        """The credentials of spec.role_arn, from STS AssumeRole through sts_client (made from the
        session of the chain or the profile, so it signs with their current credentials).
        Thread-safe (botocore's refresh lock); counts its STS calls (assumed, failed)."""

        def __init__(self, spec: CredentialSpec, sts_client):
            super().__init__(refresh_using=self._assume, method="vmod-lambda-assume-role")
            self.spec = spec
            self._sts = sts_client
            self._failed = None         # (time.monotonic(), StsError) of the last failure
            self._fail_lock = threading.Lock()
            self.assumed = 0
            self.failed = 0

        def _assume(self):
            failed = self._failed
            if failed is not None and time.monotonic() - failed[0] < STS_RETRY_HOLD:
                raise failed[1]
            spec = self.spec
            args = {"RoleArn": spec.role_arn, "RoleSessionName": spec.session_name}
            if spec.external_id is not None:
                args["ExternalId"] = spec.external_id
            try:
                c = self._sts.assume_role(**args)["Credentials"]
                expiry = c["Expiration"]
                if not isinstance(expiry, datetime):
                    raise ValueError(f"Expiration {str(expiry)[:40]!r} is not a time")
                if expiry.tzinfo is None:
                    expiry = expiry.replace(tzinfo=timezone.utc)
                left = (expiry - datetime.now(timezone.utc)).total_seconds()
                if left <= 0:
                    raise ValueError("the credentials it gave have already expired")
                data = {"access_key": c["AccessKeyId"], "secret_key": c["SecretAccessKey"],
                        "token": c["SessionToken"], "expiry_time": expiry.isoformat()}
            except Exception as e:
                err = StsError(_sts_reason(spec, e))
                with self._fail_lock:
                    self.failed += 1
                    self._failed = (time.monotonic(), err)
                raise err from None
            # botocore refreshes 15 minutes before expiry (10: every caller waits for it); a
            # session of 15 minutes or less would then be refreshed on every call: scaled.
            self._advisory_refresh_timeout = min(15 * 60, left / 4)
            self._mandatory_refresh_timeout = min(10 * 60, left / 6)
            self._failed = None
            self.assumed += 1
            return data

        def peek(self):
            """The credentials held now, without refreshing (for log redaction: it must never
            call STS)."""
            return ReadOnlyCredentials(self._access_key, self._secret_key, self._token)

    return AssumedRoleCredentials


_cls = None


def session_signing_with(creds, profile=None):
    """A new boto3 session (of profile) whose clients sign with creds: its credential chain is
    replaced by one provider that gives creds (botocore's register_component, before anything
    resolved the chain). The boto3 transport's client is made from it; the STS client from
    another session, which keeps the chain (or the profile) that assumes the role."""
    import boto3
    from botocore.credentials import CredentialProvider, CredentialResolver

    class _Given(CredentialProvider):
        METHOD = "vmod-lambda-assume-role"
        CANONICAL_NAME = "vmod-lambda-assume-role"

        def load(self):
            return creds

    session = boto3.session.Session(profile_name=profile)
    session._session.register_component("credential_provider", CredentialResolver([_Given()]))
    return session


def assumed_role_credentials(spec: CredentialSpec, session):
    """AssumedRoleCredentials for spec, their STS client made from session (boto3) now: at
    vcl.load, under clients' lock (creating clients of one session is not thread-safe)."""
    global _cls
    if _cls is None:
        _cls = _make_refreshable()
    from botocore.config import Config
    config = Config(connect_timeout=STS_CONNECT_TIMEOUT, read_timeout=STS_READ_TIMEOUT,
                    retries={"total_max_attempts": 2, "mode": "standard"},
                    user_agent_extra="vmod-lambda")
    kwargs = {}
    if spec.sts_endpoint_url is not None:
        kwargs["endpoint_url"] = spec.sts_endpoint_url
    sts = session.client("sts", region_name=spec.sts_region, config=config, **kwargs)
    return _cls(spec, sts)
