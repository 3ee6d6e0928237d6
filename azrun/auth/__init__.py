"""Process-scoped authentication: one credential per identity, single-flight tokens, IMDS pacing.

Why it exists: azure-identity keeps one token cache per credential *instance* and does no
single-flight, so eight cold concurrent calls make eight IMDS requests, and twenty jobs starting
on one VM exceed IMDS's 20 requests/s and 5 at once. azrun therefore keeps

* one credential per process per identity (:func:`get_credential`, :func:`get_async_credential`),
* one in-memory token cache per process, keyed by (identity, scopes, tenant), never on disk,
  never shared with another process, emptied in a forked child,
* exactly one request per missing token, however many threads and tasks wait for it, with
  refresh ahead of expiry (in the background) and never an expired token handed out,
* pacing of every identity-endpoint request, retries included, within the process and across
  the machine's processes (only pacing state is shared, through lock files).

Importing this package does not import the Azure SDKs; the first token request does.
"""

from __future__ import annotations

from azrun.auth._cache import RefreshPolicy, TokenCache
from azrun.auth._credentials import AsyncProcessCredential, CredentialSpec, ProcessCredential
from azrun.auth._describe import AuthInfo, ListSubscriptions, SubscriptionInfo, describe, token_claims
from azrun.auth._environment import (
    AUTH_MODES,
    AuthMode,
    Environment,
    EnvironmentKind,
    IdentitySelector,
    detect_environment,
    resolve_mode,
)
from azrun.auth._pacing import PacingConfig
from azrun.auth._registry import clear_process_cache, credential_spec, get_async_credential, get_credential
from azrun.auth._state import configure_pacing

__all__ = [
    "AUTH_MODES",
    "AsyncProcessCredential",
    "AuthInfo",
    "AuthMode",
    "CredentialSpec",
    "Environment",
    "EnvironmentKind",
    "IdentitySelector",
    "ListSubscriptions",
    "PacingConfig",
    "ProcessCredential",
    "RefreshPolicy",
    "SubscriptionInfo",
    "TokenCache",
    "clear_process_cache",
    "configure_pacing",
    "credential_spec",
    "describe",
    "detect_environment",
    "get_async_credential",
    "get_credential",
    "resolve_mode",
    "token_claims",
]
