"""``get_credential``: one credential per process per identity, shared by every azrun client.

The registry key is (cloud, environment, concrete auth mode, identity selector, tenant,
persistent-cache choice). Asking twice returns the same handle, so all clients of a process
(compute, resources, storage; sync and aio) share one token cache entry per identity and
scope. Nothing is shared with other processes except the pacing of identity-endpoint requests.
"""

from __future__ import annotations

import os

from azrun.auth import _state
from azrun.auth._credentials import AsyncProcessCredential, CredentialSpec, ProcessCredential
from azrun.auth._environment import AuthMode, Environment, IdentitySelector, detect_environment, resolve_mode
from azrun.cloud import Cloud

__all__ = ["clear_process_cache", "credential_spec", "get_async_credential", "get_credential"]


def credential_spec(
    selector: IdentitySelector | None = None,
    *,
    cloud: Cloud,
    mode: AuthMode = "auto",
    tenant_id: str | None = None,
    persistent_cache: bool = False,
    environment: Environment | None = None,
) -> CredentialSpec:
    """The registry key for these choices; ``environment`` defaults to detecting ``os.environ``.

    Raises:
        ConfigError: unknown mode.
    """
    env = environment if environment is not None else detect_environment(os.environ)
    return CredentialSpec(
        cloud=cloud,
        environment=env,
        mode=resolve_mode(mode, env),
        selector=selector or IdentitySelector(),
        tenant_id=tenant_id or None,
        persistent_cache=persistent_cache,
    )


def get_credential(
    selector: IdentitySelector | None = None,
    *,
    cloud: Cloud,
    mode: AuthMode = "auto",
    tenant_id: str | None = None,
    persistent_cache: bool = False,
    environment: Environment | None = None,
) -> ProcessCredential:
    """This process's sync credential for the identity described (made on first request).

    Args:
        selector: user-assigned identity (``None``: system-assigned / the login's own).
        cloud: where tokens are for; scopes and authority derive from it.
        mode: ``auto`` follows :func:`detect_environment`; see :data:`AuthMode`.
        tenant_id: tenant for CLI / user logins.
        persistent_cache: device / browser logins only: keep the login in the OS-protected msal
            cache across runs. Off by default (in-memory only).
        environment: the detected environment; default: detected from ``os.environ``.
    """
    spec = credential_spec(
        selector, cloud=cloud, mode=mode, tenant_id=tenant_id, persistent_cache=persistent_cache,
        environment=environment,
    )
    return _state.current().get_or_create(("sync", spec), lambda: ProcessCredential(spec))


def get_async_credential(
    selector: IdentitySelector | None = None,
    *,
    cloud: Cloud,
    mode: AuthMode = "auto",
    tenant_id: str | None = None,
    persistent_cache: bool = False,
    environment: Environment | None = None,
) -> AsyncProcessCredential:
    """The async twin of :func:`get_credential`, over the same tokens."""
    spec = credential_spec(
        selector, cloud=cloud, mode=mode, tenant_id=tenant_id, persistent_cache=persistent_cache,
        environment=environment,
    )
    return _state.current().get_or_create(("async", spec), lambda: AsyncProcessCredential(spec))


def clear_process_cache() -> None:
    """Forget every credential, token and pacing setting of this process (tests use it)."""
    _state.reset()
