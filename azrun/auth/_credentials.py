"""azrun's credentials: thin handles over the process's token cache.

:class:`ProcessCredential` (sync: ``TokenCredential`` + ``SupportsTokenInfo``) and
:class:`AsyncProcessCredential` (``AsyncTokenCredential`` + ``AsyncSupportsTokenInfo``) are
what every azrun client is given. Both ask the one process-wide :class:`TokenCache`; on a miss
the cache calls the same fetch, which uses one azure-identity *sync* credential per identity
per process (async callers run it in a worker thread, so one fetch path and one cache serve
both worlds). Managed-identity credentials get a :class:`PacedTransport`, so every request to
the identity endpoint, retries included, is paced machine-wide.

``close()`` is a no-op: the credential belongs to the process, not to the client closing it.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from azrun.auth import _state
from azrun.auth._diagnosis import login_error, managed_identity_error, recording
from azrun.auth._environment import AuthMode, Environment, IdentitySelector
from azrun.cloud import Cloud
from azrun.errors import AzrunError

if TYPE_CHECKING:
    from azure.core.credentials import AccessToken, AccessTokenInfo, SupportsTokenInfo, TokenRequestOptions

    from azrun.auth._pacing import Pacer

__all__ = ["AsyncProcessCredential", "CredentialSpec", "ProcessCredential"]

_LOGGER = logging.getLogger(__name__)

# IMDS guidance (azure-facts §4): retry 404, 410, 429 and 5xx; Retry-After wins over backoff.
_RETRY_STATUSES = (404, 410, 429, *range(500, 600))


_SYSTEM_ASSIGNED = IdentitySelector()


@dataclass(frozen=True, slots=True)
class CredentialSpec:
    """Everything that makes two credentials different: the registry key.

    ``mode`` is always concrete here (never ``auto``).
    """

    cloud: Cloud
    environment: Environment
    mode: AuthMode
    selector: IdentitySelector = _SYSTEM_ASSIGNED
    tenant_id: str | None = None
    persistent_cache: bool = False

    @property
    def identity_key(self) -> str:
        """A short string naming this identity in token-cache keys."""
        parts = [self.mode, self.cloud.name, self.cloud.authority_host, self.environment.kind.value]
        parts += [self.selector.label(), self.tenant_id or "-"]
        return "|".join(parts)

    def describe_identity(self) -> str:
        """What ``azrun auth`` prints as the identity asked for."""
        if self.mode == "msi":
            return f"managed identity ({self.selector.label()})"
        return {"cli": "Azure CLI login", "env": "service principal from environment"}.get(
            self.mode, f"user login ({self.mode})"
        )


def build_inner(spec: CredentialSpec, pacer: Pacer | None) -> SupportsTokenInfo:
    """The azure-identity credential that fetches tokens for ``spec`` (one per process)."""
    if spec.mode == "msi":
        assert pacer is not None
        return _managed_identity(spec.selector, pacer)
    if spec.mode == "cli":
        from azure.identity import AzureCliCredential

        return AzureCliCredential(tenant_id=spec.tenant_id or "")
    if spec.mode == "env":
        from azure.identity import EnvironmentCredential

        return EnvironmentCredential(authority=spec.cloud.authority_host)
    return _user_login(spec)


def _managed_identity(selector: IdentitySelector, pacer: Pacer) -> SupportsTokenInfo:
    from azure.core.pipeline.transport import RequestsTransport
    from azure.identity import ManagedIdentityCredential

    from azrun.auth._transport import PacedTransport

    identity_config: dict[str, str] | None = None
    if selector.object_id:
        identity_config = {"object_id": selector.object_id}
    elif selector.resource_id:
        identity_config = {"resource_id": selector.resource_id}
    config = pacer.config
    # IMDS answers locally: 2 s to connect (as azure-identity), 30 s to answer.
    transport = PacedTransport(RequestsTransport(connection_timeout=2, read_timeout=30), pacer)
    return ManagedIdentityCredential(
        client_id=selector.client_id,
        identity_config=identity_config,
        transport=transport,
        retry_total=config.retry_total,
        retry_backoff_factor=config.retry_backoff_s,
        retry_on_status_codes=list(_RETRY_STATUSES),
    )


def _user_login(spec: CredentialSpec) -> SupportsTokenInfo:
    """Device-code or browser login; the token cache is in memory unless the user opted in."""
    from azure.identity import (
        DeviceCodeCredential,
        InteractiveBrowserCredential,
        TokenCachePersistenceOptions,
    )

    kwargs: dict[str, Any] = {"authority": spec.cloud.authority_host}
    if spec.tenant_id:
        kwargs["tenant_id"] = spec.tenant_id
    if spec.persistent_cache:
        kwargs["cache_persistence_options"] = TokenCachePersistenceOptions(name="azrun")
    if spec.mode == "device":
        return DeviceCodeCredential(**kwargs)
    return InteractiveBrowserCredential(**kwargs)


class _Base:
    """The I/O-free half shared by the sync and async handles."""

    __slots__ = ("_cae", "_identity", "spec")

    def __init__(self, spec: CredentialSpec) -> None:
        self.spec = spec
        self._identity = spec.identity_key
        # CAE changes the token only for msal user / app logins; managed identity and the CLI
        # ignore it, so it must not split their cache entries (and double the IMDS requests).
        self._cae = spec.mode in ("env", "device", "interactive")

    def _key(self, scopes: tuple[str, ...], options: TokenRequestOptions | None) -> tuple[Any, ...]:
        if not scopes:
            raise ValueError("get_token requires at least one scope")
        if not options:
            return (self._identity, scopes, None, False)
        cae = self._cae and bool(options.get("enable_cae"))
        return (self._identity, scopes, options.get("tenant_id") or None, cae)

    def _fetch(self, scopes: tuple[str, ...], options: TokenRequestOptions | None) -> AccessTokenInfo:
        """One real token request (called by the cache, at most once per key at a time)."""
        spec = self.spec
        state = _state.current()
        pacer = state.pacer() if spec.mode == "msi" else None
        inner = state.get_or_create(("inner", spec), lambda: build_inner(spec, pacer))
        started = time.monotonic()
        with recording() as attempts:
            try:
                info = inner.get_token_info(*scopes, options=options)
            except AzrunError:
                raise
            except Exception as exc:
                _LOGGER.debug("token for %s %s failed after %d requests", spec.selector.label(), scopes, len(attempts))
                if spec.mode == "msi":
                    raise managed_identity_error(spec.environment, spec.selector, attempts, exc) from exc
                raise login_error(spec.mode, exc) from exc
        _LOGGER.debug(
            "token for %s (%s) %s: %d requests, %.3f s, expires in %d s",
            spec.selector.label(), spec.mode, scopes, len(attempts), time.monotonic() - started,
            info.expires_on - time.time(),
        )
        return info

    def _prepare(
        self, scopes: tuple[str, ...], options: TokenRequestOptions | None
    ) -> tuple[tuple[Any, ...], functools.partial[AccessTokenInfo]]:
        key = self._key(scopes, options)
        if options and options.get("claims"):
            _state.current().cache.invalidate(key)  # a claims challenge: this token was refused
        return key, functools.partial(self._fetch, scopes, options)

    def invalidate(self, *scopes: str, tenant_id: str | None = None) -> None:
        """Forget the cached token for ``scopes`` (e.g. after a 401 with it)."""
        options: TokenRequestOptions = {"tenant_id": tenant_id} if tenant_id else {}
        _state.current().cache.invalidate(self._key(scopes, options or None))

    def __repr__(self) -> str:
        spec = self.spec
        return (
            f"{type(self).__name__}(mode={spec.mode!r}, identity={spec.selector.label()!r}, "
            f"cloud={spec.cloud.name!r}, environment={spec.environment.describe()!r})"
        )


def _options(claims: str | None, tenant_id: str | None, enable_cae: bool) -> TokenRequestOptions | None:
    if not (claims or tenant_id or enable_cae):
        return None
    options: TokenRequestOptions = {}
    if claims:
        options["claims"] = claims
    if tenant_id:
        options["tenant_id"] = tenant_id
    if enable_cae:
        options["enable_cae"] = True
    return options


class ProcessCredential(_Base):
    """Sync credential for azure-core clients, backed by the process's token cache."""

    __slots__ = ()

    def get_token_info(self, *scopes: str, options: TokenRequestOptions | None = None) -> AccessTokenInfo:
        """A token for ``scopes``: from memory if fresh, else fetched once for all callers."""
        key, fetch = self._prepare(scopes, options)
        return _state.current().cache.get(key, fetch)

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        """``TokenCredential.get_token`` over :meth:`get_token_info`."""
        from azure.core.credentials import AccessToken

        info = self.get_token_info(*scopes, options=_options(claims, tenant_id, enable_cae))
        return AccessToken(info.token, info.expires_on)

    def close(self) -> None:
        """Nothing to release: the credential lives as long as the process."""

    def __enter__(self) -> ProcessCredential:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


class AsyncProcessCredential(_Base):
    """Async credential for azure-core aio clients, over the same cache as the sync one."""

    __slots__ = ()

    async def get_token_info(self, *scopes: str, options: TokenRequestOptions | None = None) -> AccessTokenInfo:
        """A token for ``scopes``; a cold fetch runs in a worker thread, never on the loop."""
        key, fetch = self._prepare(scopes, options)
        return await _state.current().cache.aget(key, fetch)

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        """``AsyncTokenCredential.get_token`` over :meth:`get_token_info`."""
        from azure.core.credentials import AccessToken

        info = await self.get_token_info(*scopes, options=_options(claims, tenant_id, enable_cae))
        return AccessToken(info.token, info.expires_on)

    async def close(self) -> None:
        """Nothing to release: the credential lives as long as the process."""

    async def __aenter__(self) -> AsyncProcessCredential:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        return None
