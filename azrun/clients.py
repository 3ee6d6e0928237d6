"""ClientFactory: every Azure SDK client azrun uses is built here, and only here.

So every client shares the process credential (one token cache, single-flight), carries the
throttle policy in ``per_retry_policies`` (every attempt, retries included, takes its token),
trusts the custom cloud's CA, and talks to the cloud's ARM endpoint. aio clients are cached per
subscription and closed together by :meth:`ClientFactory.aclose`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from azrun.cloud import Cloud

_C = TypeVar("_C")

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.mgmt.compute import ComputeManagementClient
    from azure.mgmt.compute.aio import ComputeManagementClient as AsyncComputeManagementClient
    from azure.mgmt.resource.resources import ResourceManagementClient
    from azure.mgmt.resource.resources.aio import ResourceManagementClient as AsyncResourceManagementClient
    from azure.mgmt.resource.subscriptions import SubscriptionClient
    from azure.mgmt.resource.subscriptions.aio import SubscriptionClient as AsyncSubscriptionClient

    from azrun.auth import IdentitySelector
    from azrun.throttle import Throttle


def env_names_proxy(environ: Mapping[str, str]) -> bool:
    """Does the environment name any proxy (``HTTPS_PROXY``, ``ALL_PROXY``, ... any case)?

    When none does, the aio clients are built with ``use_env_settings=False``: aiohttp's
    ``trust_env`` otherwise looks the proxy up *per request* in a worker thread
    (``asyncio.to_thread``), a thread hop on every ARM call (issue 17: client CPU per target).
    Conservative: any proxy variable at all keeps the SDK's default (``NO_PROXY`` not parsed).
    """
    return any(k.lower().endswith("_proxy") and k.lower() != "no_proxy" and v for k, v in environ.items())


def aio_transport(ca_bundle: str | None = None, *, env_settings: bool = True) -> Any:
    """azure-core's aiohttp transport, with two changes.

    * aiohttp resends an idempotent request (PUT, DELETE) once, by itself, when the server drops
      the connection after the request was written (RFC 9112 section 9.3.1 allows it). For a run
      command that may run the script twice: a dropped PUT may have been applied. azrun turns
      that off on the transport's session, so the one who knows (:func:`azrun.fleet._deliver.deliver`:
      GET before a new PUT) decides. aiohttp has no public switch: the session's
      ``_retry_connection`` flag is set when the session opens (the fault matrix's lost-answer
      row fails if that stops working).
    * With a custom CA (``ca_bundle``), ONE ssl context: azure-core builds a new SSLContext for
      every request when ``connection_verify`` is a path, so aiohttp never reuses a connection and
      every request pays a TLS handshake (measured: 2x the CPU and 4x the memory on a
      1,000-target run against the local Azure). Real Azure (no custom CA) never takes that path.
    """
    import ssl

    from azure.core.pipeline.transport import AioHttpTransport

    context = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else None

    class _AzrunTransport(AioHttpTransport):  # type: ignore[misc]
        async def open(self) -> None:
            await super().open()
            if self.session is not None and hasattr(self.session, "_retry_connection"):
                self.session._retry_connection = False

        def _build_ssl_config(self, cert: Any, verify: Any) -> Any:
            if context is not None and not cert and verify == ca_bundle:
                return context
            return super()._build_ssl_config(cert, verify)

    kwargs: dict[str, Any] = {"use_env_settings": env_settings}
    return _AzrunTransport(connection_verify=ca_bundle, **kwargs) if ca_bundle else _AzrunTransport(**kwargs)


@dataclass
class ClientFactory:
    """Builds SDK clients that share one credential and one throttle."""

    cloud: Cloud
    throttle: Throttle | None = None
    identity: IdentitySelector | None = None
    auth_mode: str = "auto"
    polling_interval_s: float | None = None
    #: False when the environment names no proxy (see :func:`env_names_proxy`); True keeps the SDK default.
    env_proxy: bool = True
    _aio: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        identity: IdentitySelector | None = None,
        auth_mode: str = "auto",
        throttle: Throttle | bool | None = True,
    ) -> ClientFactory:
        """The cloud and throttle limits from the environment (``AZRUN_*``)."""
        import os

        from azrun.throttle import Throttle, ThrottleLimits

        env = os.environ if environ is None else environ
        chosen: Throttle | None
        if throttle is True:
            limits = ThrottleLimits.from_env(env)
            chosen = Throttle(limits) if limits.enabled else None
        else:
            chosen = throttle or None
        return cls(cloud=Cloud.from_env(env), throttle=chosen, identity=identity, auth_mode=auth_mode,
                   env_proxy=env_names_proxy(env))

    # -- credentials -------------------------------------------------------------------------
    def credential(self) -> TokenCredential:
        """The process-wide credential for this factory's identity (tokens shared, refreshed once)."""
        from azrun import auth

        return auth.get_credential(self.identity, cloud=self.cloud, mode=self.auth_mode)  # type: ignore[arg-type]

    def acredential(self) -> AsyncTokenCredential:
        """The async twin of :meth:`credential`, over the same tokens."""
        from azrun import auth

        return auth.get_async_credential(self.identity, cloud=self.cloud, mode=self.auth_mode)  # type: ignore[arg-type]

    # -- common kwargs -----------------------------------------------------------------------
    def _kwargs(self, *, aio: bool) -> dict[str, Any]:
        from azrun import throttle as throttle_mod

        kwargs: dict[str, Any] = {
            "base_url": self.cloud.arm_endpoint,
            "credential_scopes": [self.cloud.management_scope],
        }
        if self.cloud.ca_bundle:
            kwargs["connection_verify"] = self.cloud.ca_bundle
        if aio:
            kwargs["transport"] = aio_transport(self.cloud.ca_bundle, env_settings=self.env_proxy)
        if self.polling_interval_s is not None:
            kwargs["polling_interval"] = self.polling_interval_s
        kwargs.update(
            throttle_mod.aclient_kwargs(self.throttle) if aio else throttle_mod.client_kwargs(self.throttle)
        )
        return kwargs

    # -- sync clients ------------------------------------------------------------------------
    def compute(self, subscription_id: str) -> ComputeManagementClient:
        """A new sync Compute client for ``subscription_id`` (close it yourself)."""
        from azure.mgmt.compute import ComputeManagementClient

        return ComputeManagementClient(self.credential(), subscription_id, **self._kwargs(aio=False))

    def resources(self, subscription_id: str) -> ResourceManagementClient:
        """A new sync Resources client for ``subscription_id`` (close it yourself)."""
        from azure.mgmt.resource.resources import ResourceManagementClient

        return ResourceManagementClient(self.credential(), subscription_id, **self._kwargs(aio=False))

    def subscriptions(self, credential: TokenCredential | None = None) -> SubscriptionClient:
        """A new sync Subscriptions client (close it yourself)."""
        from azure.mgmt.resource.subscriptions import SubscriptionClient

        return SubscriptionClient(credential or self.credential(), **self._kwargs(aio=False))

    # -- aio clients (cached; closed by aclose) ------------------------------------------------
    def acompute(self, subscription_id: str) -> AsyncComputeManagementClient:
        """The async Compute client for ``subscription_id`` (cached; :meth:`aclose` closes it)."""
        from azure.mgmt.compute.aio import ComputeManagementClient

        return self._cached(
            ("compute", subscription_id),
            lambda: ComputeManagementClient(self.acredential(), subscription_id, **self._kwargs(aio=True)),
        )

    def aresources(self, subscription_id: str) -> AsyncResourceManagementClient:
        """The async Resources client for ``subscription_id`` (cached; :meth:`aclose` closes it)."""
        from azure.mgmt.resource.resources.aio import ResourceManagementClient

        return self._cached(
            ("resources", subscription_id),
            lambda: ResourceManagementClient(self.acredential(), subscription_id, **self._kwargs(aio=True)),
        )

    def asubscriptions(self) -> AsyncSubscriptionClient:
        """The async Subscriptions client (cached; :meth:`aclose` closes it)."""
        from azure.mgmt.resource.subscriptions.aio import SubscriptionClient

        return self._cached(
            ("subscriptions", ""),
            lambda: SubscriptionClient(self.acredential(), **self._kwargs(aio=True)),
        )

    def _cached(self, key: tuple[str, str], build: Callable[[], _C]) -> _C:
        client = self._aio.get(key)
        if client is None:
            client = self._aio[key] = build()
        return cast(_C, client)

    async def aclose(self) -> None:
        """Close the cached async clients."""
        clients, self._aio = list(self._aio.values()), {}
        for client in clients:
            await client.close()
