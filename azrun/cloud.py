"""Azure clouds: where ARM and the authority live, and which token scopes go with them.

A :class:`Cloud` is a small frozen value: every client, credential and scope in azrun is derived
from one, so pointing azrun at US Government, China or the local Azure is one choice, not a
search-and-replace. The custom cloud is how the local Azure (``azrun sim``) is reached: its ARM
endpoint and CA bundle come from ``AZRUN_ARM_ENDPOINT`` / ``AZRUN_CA_BUNDLE``, while its token
audiences stay the public ones because the simulator accepts ``https://management.azure.com``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Final
from urllib.parse import urlsplit

from azrun.errors import ConfigError

__all__ = ["CHINA", "CLOUDS", "PUBLIC", "USGOV", "Cloud"]

# The storage audience is the same in every cloud: Azure Storage accepts the generic
# https://storage.azure.com resource everywhere (azure-storage-blob uses it unconditionally).
_STORAGE_SCOPE: Final = "https://storage.azure.com/.default"


@dataclass(frozen=True, slots=True)
class Cloud:
    """One Azure cloud.

    Attributes:
        name: ``public``, ``usgov``, ``china`` or ``custom``.
        arm_endpoint: ARM base URL without a trailing slash.
        authority_host: Entra ID authority for user and service-principal logins.
        management_scope: the ``.default`` scope ARM tokens are requested for.
        storage_scope: the ``.default`` scope blob tokens are requested for.
        storage_suffix: host suffix of blob endpoints (``<account>.<suffix>``).
        ca_bundle: PEM file to trust for ARM (custom clouds only), else ``None``.
    """

    name: str
    arm_endpoint: str
    authority_host: str
    management_scope: str
    storage_scope: str = _STORAGE_SCOPE
    storage_suffix: str = "blob.core.windows.net"
    ca_bundle: str | None = None

    @property
    def management_resource(self) -> str:
        """The v1 ``resource`` form of :attr:`management_scope` (what IMDS is asked for)."""
        return self.management_scope.removesuffix(".default")

    @property
    def is_custom(self) -> bool:
        """True for a cloud built by :meth:`custom` (the local Azure or a private stack)."""
        return self.name == "custom"

    @classmethod
    def custom(cls, arm_endpoint: str, ca_bundle: str | None = None, *, base: Cloud | None = None) -> Cloud:
        """A cloud with its own ARM endpoint (and CA); scopes and authority come from ``base``.

        ``base`` defaults to :data:`PUBLIC`, which is what the local Azure expects: it checks the
        token audience against the public management resource.

        Raises:
            ConfigError: the endpoint is not an absolute http(s) URL.
        """
        parts = urlsplit(arm_endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                f"ARM endpoint {arm_endpoint!r} is not an absolute http(s) URL",
                hint="set AZRUN_ARM_ENDPOINT to e.g. https://127.0.0.1:8443",
            )
        return replace(
            base or PUBLIC, name="custom", arm_endpoint=arm_endpoint.rstrip("/"), ca_bundle=ca_bundle or None
        )

    @classmethod
    def by_name(cls, name: str) -> Cloud:
        """The well-known cloud called ``name`` (``public``, ``usgov``, ``china``; a few aliases).

        Raises:
            ConfigError: no such cloud.
        """
        key = name.strip().lower().replace("-", "").replace("_", "")
        cloud = _ALIASES.get(key)
        if cloud is None:
            known = ", ".join(sorted(CLOUDS))
            raise ConfigError(f"unknown cloud {name!r}", hint=f"use one of: {known}")
        return cloud

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Cloud:
        """The cloud the environment names.

        ``AZRUN_ARM_ENDPOINT`` (+ ``AZRUN_CA_BUNDLE``) gives a custom cloud based on
        ``AZRUN_CLOUD`` (default public); otherwise ``AZRUN_CLOUD`` picks a well-known cloud.
        """
        base = cls.by_name(environ["AZRUN_CLOUD"]) if environ.get("AZRUN_CLOUD") else PUBLIC
        arm = environ.get("AZRUN_ARM_ENDPOINT", "").strip()
        if arm:
            return cls.custom(arm, environ.get("AZRUN_CA_BUNDLE") or None, base=base)
        return base


PUBLIC: Final = Cloud(
    name="public",
    arm_endpoint="https://management.azure.com",
    authority_host="https://login.microsoftonline.com",
    management_scope="https://management.azure.com/.default",
)
USGOV: Final = Cloud(
    name="usgov",
    arm_endpoint="https://management.usgovcloudapi.net",
    authority_host="https://login.microsoftonline.us",
    management_scope="https://management.usgovcloudapi.net/.default",
    storage_suffix="blob.core.usgovcloudapi.net",
)
CHINA: Final = Cloud(
    name="china",
    arm_endpoint="https://management.chinacloudapi.cn",
    authority_host="https://login.chinacloudapi.cn",
    management_scope="https://management.chinacloudapi.cn/.default",
    storage_suffix="blob.core.chinacloudapi.cn",
)

CLOUDS: Final[Mapping[str, Cloud]] = {"public": PUBLIC, "usgov": USGOV, "china": CHINA}

_ALIASES: Final[Mapping[str, Cloud]] = {
    "public": PUBLIC,
    "azurecloud": PUBLIC,
    "azure": PUBLIC,
    "usgov": USGOV,
    "azureusgovernment": USGOV,
    "usgovernment": USGOV,
    "china": CHINA,
    "azurechinacloud": CHINA,
}
