"""Where azrun is running, decided once from the environment and printable as one line.

The answer picks the credential (``--auth auto``) and is what ``azrun auth`` prints, so it must
be explicit: which hosting environment, which identity endpoint, and which evidence decided it.
No network probe: a probe is what makes ``DefaultAzureCredential`` slow off Azure and flaky on
it. A plain Linux Azure VM is recognised by the DMI asset tag Azure sets on every VM.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from azrun.errors import ConfigError

__all__ = [
    "AUTH_MODES",
    "AuthMode",
    "Environment",
    "EnvironmentKind",
    "IdentitySelector",
    "detect_environment",
    "resolve_mode",
]

AuthMode = Literal["auto", "msi", "cli", "device", "interactive", "env"]
"""How to authenticate: ``auto`` follows :func:`detect_environment`; ``msi`` managed identity;
``cli`` the Azure CLI login; ``device`` / ``interactive`` an msal user login (admins without the
CLI); ``env`` a service principal from ``AZURE_CLIENT_ID`` / ``AZURE_TENANT_ID`` / secret or cert."""

AUTH_MODES: Final[tuple[AuthMode, ...]] = ("auto", "msi", "cli", "device", "interactive", "env")

IMDS_HOST: Final = "http://169.254.169.254"
IMDS_TOKEN_PATH: Final = "/metadata/identity/oauth2/token"
# Azure stamps this chassis asset tag on every VM (cloud-init's Azure detection uses it too).
AZURE_ASSET_TAG: Final = "7783-7084-3265-9085-8269-3286-77"
DMI_ASSET_TAG_PATH: Final = "/sys/class/dmi/id/chassis_asset_tag"


class EnvironmentKind(enum.Enum):
    """The hosting environments azrun knows how to get a token in."""

    AZURE_VM = "azure-vm"
    APP_SERVICE = "app-service"
    AUTOMATION = "automation"
    ARC = "arc"
    CLOUD_SHELL = "cloud-shell"
    SERVICE_FABRIC = "service-fabric"
    WORKLOAD_IDENTITY = "workload-identity"
    SERVICE_PRINCIPAL = "service-principal"
    TERMINAL = "terminal"

    @property
    def uses_managed_identity(self) -> bool:
        """True where the token comes from a local identity endpoint (paced, per machine)."""
        return self not in (EnvironmentKind.SERVICE_PRINCIPAL, EnvironmentKind.TERMINAL)


_TITLES: Final[Mapping[EnvironmentKind, str]] = {
    EnvironmentKind.AZURE_VM: "Azure VM / VMSS",
    EnvironmentKind.APP_SERVICE: "App Service / Functions",
    EnvironmentKind.AUTOMATION: "Azure Automation",
    EnvironmentKind.ARC: "Azure Arc",
    EnvironmentKind.CLOUD_SHELL: "Cloud Shell",
    EnvironmentKind.SERVICE_FABRIC: "Service Fabric",
    EnvironmentKind.WORKLOAD_IDENTITY: "Kubernetes workload identity",
    EnvironmentKind.SERVICE_PRINCIPAL: "service principal",
    EnvironmentKind.TERMINAL: "terminal",
}


@dataclass(frozen=True, slots=True)
class Environment:
    """What :func:`detect_environment` decided.

    Attributes:
        kind: the hosting environment.
        endpoint: the identity endpoint URL the token will come from, if there is one.
        evidence: the variable or file that decided it, for ``azrun auth``.
    """

    kind: EnvironmentKind
    endpoint: str | None
    evidence: str

    @property
    def default_mode(self) -> AuthMode:
        """The credential ``--auth auto`` picks here."""
        if self.kind is EnvironmentKind.TERMINAL:
            return "cli"
        if self.kind is EnvironmentKind.SERVICE_PRINCIPAL:
            return "env"
        return "msi"

    def describe(self) -> str:
        """One line, e.g. ``Azure VM / VMSS (IMDS at http://169.254.169.254/...)``."""
        title = _TITLES[self.kind]
        if self.kind is EnvironmentKind.TERMINAL:
            return f"{title} (Azure CLI login)"
        if self.kind is EnvironmentKind.SERVICE_PRINCIPAL:
            return f"{title} ({self.evidence})"
        if self.kind is EnvironmentKind.AZURE_VM:
            return f"{title} (IMDS at {self.endpoint})"
        return f"{title} (identity endpoint {self.endpoint}; {self.evidence})"

    def __str__(self) -> str:
        return self.describe()


@dataclass(frozen=True, slots=True)
class IdentitySelector:
    """Which user-assigned identity to use; all ``None`` means the system-assigned one.

    At most one field may be set (IMDS rejects a request naming two).
    """

    client_id: str | None = None
    object_id: str | None = None
    resource_id: str | None = None

    def __post_init__(self) -> None:
        given = [v for v in (self.client_id, self.object_id, self.resource_id) if v]
        if len(given) > 1:
            raise ConfigError(
                "choose one of --client-id, --object-id, --identity-resource-id",
                hint="IMDS accepts exactly one user-assigned identity selector per request",
            )

    @property
    def is_system_assigned(self) -> bool:
        """True when no user-assigned identity is named."""
        return not (self.client_id or self.object_id or self.resource_id)

    def label(self) -> str:
        """Short printable form: ``system-assigned`` or ``client_id=...``."""
        if self.client_id:
            return f"client_id={self.client_id}"
        if self.object_id:
            return f"object_id={self.object_id}"
        if self.resource_id:
            return f"resource_id={self.resource_id}"
        return "system-assigned"


def detect_environment(
    environ: Mapping[str, str], *, dmi_asset_tag_path: str | None = DMI_ASSET_TAG_PATH
) -> Environment:
    """Decide where this process runs.

    A service principal in the environment wins (as in ``DefaultAzureCredential``); then the
    managed-identity endpoints in the order msal picks them; then the VM's DMI asset tag.

    Args:
        environ: the process environment (``os.environ`` in production, a dict in tests).
        dmi_asset_tag_path: file whose content identifies an Azure VM; ``None`` skips the check.
    """
    get = environ.get
    if get("AZURE_CLIENT_ID") and get("AZURE_TENANT_ID") and (
        get("AZURE_CLIENT_SECRET") or get("AZURE_CLIENT_CERTIFICATE_PATH")
    ):
        kind = "secret" if get("AZURE_CLIENT_SECRET") else "certificate"
        return Environment(EnvironmentKind.SERVICE_PRINCIPAL, None, f"AZURE_CLIENT_ID + {kind} in environment")
    managed = _detect_managed(environ)
    if managed is not None:
        return managed
    if dmi_asset_tag_path and _is_azure_vm(dmi_asset_tag_path):
        return Environment(
            EnvironmentKind.AZURE_VM, IMDS_HOST + IMDS_TOKEN_PATH, f"Azure asset tag in {dmi_asset_tag_path}"
        )
    return Environment(EnvironmentKind.TERMINAL, None, "no identity endpoint found")


def _detect_managed(environ: Mapping[str, str]) -> Environment | None:
    """The managed-identity environments announced by variables (msal's order)."""
    get = environ.get
    endpoint, header = get("IDENTITY_ENDPOINT"), get("IDENTITY_HEADER")
    automation = bool(get("AUTOMATION_ASSET_ACCOUNTID"))
    if endpoint and header:
        if get("IDENTITY_SERVER_THUMBPRINT"):
            return Environment(EnvironmentKind.SERVICE_FABRIC, endpoint, "IDENTITY_SERVER_THUMBPRINT")
        if automation:
            return Environment(EnvironmentKind.AUTOMATION, endpoint, "AUTOMATION_ASSET_ACCOUNTID")
        return Environment(EnvironmentKind.APP_SERVICE, endpoint, "IDENTITY_ENDPOINT + IDENTITY_HEADER")
    if endpoint and get("IMDS_ENDPOINT"):
        return Environment(EnvironmentKind.ARC, endpoint, "IDENTITY_ENDPOINT + IMDS_ENDPOINT")
    msi = get("MSI_ENDPOINT")
    if msi:
        if automation:
            return Environment(EnvironmentKind.AUTOMATION, msi, "MSI_ENDPOINT + AUTOMATION_ASSET_ACCOUNTID")
        if not get("MSI_SECRET"):
            return Environment(EnvironmentKind.CLOUD_SHELL, msi, "MSI_ENDPOINT without MSI_SECRET")
        return Environment(EnvironmentKind.APP_SERVICE, msi, "MSI_ENDPOINT + MSI_SECRET (legacy protocol)")
    if get("AZURE_FEDERATED_TOKEN_FILE") and get("AZURE_TENANT_ID") and get("AZURE_CLIENT_ID"):
        return Environment(EnvironmentKind.WORKLOAD_IDENTITY, None, "AZURE_FEDERATED_TOKEN_FILE")
    override = get("AZURE_POD_IDENTITY_AUTHORITY_HOST")
    if override:
        url = override.strip().rstrip("/") + IMDS_TOKEN_PATH
        return Environment(EnvironmentKind.AZURE_VM, url, "AZURE_POD_IDENTITY_AUTHORITY_HOST")
    return None


def _is_azure_vm(path: str) -> bool:
    try:
        return Path(path).read_text(encoding="ascii", errors="replace").strip() == AZURE_ASSET_TAG
    except OSError:
        return False


def resolve_mode(mode: AuthMode, environment: Environment) -> AuthMode:
    """The concrete mode for ``mode`` here (``auto`` becomes the environment's default).

    Raises:
        ConfigError: ``mode`` is not one of :data:`AUTH_MODES`.
    """
    if mode not in AUTH_MODES:
        raise ConfigError(f"unknown --auth {mode!r}", hint=f"use one of: {', '.join(AUTH_MODES)}")
    return environment.default_mode if mode == "auto" else mode
