"""ClientFactory: every Azure SDK client azrun uses is built here, and only here.

So every client shares the process credential (one token cache, single-flight), carries the
throttle policy in ``per_retry_policies`` (every attempt, retries included, takes its token),
trusts the custom cloud's CA, and talks to the cloud's ARM endpoint. aio clients are cached per
subscription and event loop and closed together by :meth:`ClientFactory.aclose`; they all send
through ONE transport per event loop (:mod:`azrun._http`: one bounded, kept-alive connection pool
per endpoint, so a run's burst of requests does not open a TLS connection per target).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from azrun._engine import running_loop
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
    _aio: dict[tuple[str, str, int], Any] = field(default_factory=dict, repr=False)
    _transports: dict[int, tuple[object, Any]] = field(default_factory=dict, repr=False)

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
            kwargs["transport"] = self.aio_transport()
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

    def aio_transport(self) -> Any:
        """This loop's shared transport (:mod:`azrun._http`), as one client's view of it: every
        aio client of this factory (ARM and blob) sends through it; :meth:`aclose` closes it."""
        from azrun._http import SharedTransport

        loop = running_loop()
        entry = self._transports.get(id(loop))
        if entry is None or entry[0] is not loop:
            entry = self._transports[id(loop)] = (loop, SharedTransport(self.cloud.ca_bundle, env_settings=self.env_proxy))
        return entry[1].client_view()

    def _cached(self, key: tuple[str, str], build: Callable[[], _C]) -> _C:
        full = (*key, id(running_loop()))  # aiohttp sessions belong to one event loop
        client = self._aio.get(full)
        if client is None:
            client = self._aio[full] = build()
        return cast(_C, client)

    async def aclose(self) -> None:
        """Close this event loop's cached async clients and shared transport."""
        here = id(running_loop())
        clients = [c for k, c in self._aio.items() if k[2] == here]
        self._aio = {k: c for k, c in self._aio.items() if k[2] != here}
        for client in clients:
            await client.close()
        entry = self._transports.pop(here, None)
        if entry is not None:
            await entry[1].close()
